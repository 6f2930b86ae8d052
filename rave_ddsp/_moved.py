"""Old flat module names (before the split into subpackages) as aliases of their new homes.

Configs name classes by import path (``class_path: rave_ddsp.augment.RandomGain``) and are
saved with every run, so a run saved before the split must still resolve them. Importing
``rave_ddsp.augment`` gives the very module ``rave_ddsp.data.augment`` (one module object,
so classes compare equal). ``rave_ddsp.data`` and ``rave_ddsp.dsp`` were modules and are now
packages: see their ``__getattr__``.
"""
import importlib
import importlib.abc
import importlib.util
import sys

MOVED = {
    "audio": "data.audio", "augment": "data.augment", "corpus": "data.corpus", "store": "data.store",
    "pqmf": "dsp.pqmf",
    "layers": "nn.layers", "encoder": "nn.encoder", "decoder": "nn.decoder", "noise": "nn.noise",
    "discriminator": "nn.discriminator",
    "model": "train.model", "losses": "train.losses", "latent": "train.latent", "callbacks": "train.callbacks",
    "cli": "train.cli",
    "export": "runtime.export", "inference": "runtime.inference", "codec": "runtime.codec",
    "codec_files": "runtime.jobs",
    "metrics": "analysis.metrics", "evaluation": "analysis.evaluation", "explore": "analysis.explore",
    "explore_figures": "analysis.figures",
}
"""Old module name (under ``rave_ddsp``) -> its path now (under ``rave_ddsp``)."""


class MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolve ``rave_ddsp.<old name>`` to the module that now holds it."""

    def find_spec(self, fullname, path=None, target=None):
        package, _, name = fullname.rpartition(".")
        if package == "rave_ddsp" and name in MOVED:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        return importlib.import_module(f"rave_ddsp.{MOVED[spec.name.rpartition('.')[2]]}")

    def exec_module(self, module) -> None:
        pass  # already executed under its new name


def install() -> None:
    if not any(isinstance(finder, MovedModules) for finder in sys.meta_path):
        sys.meta_path.append(MovedModules())

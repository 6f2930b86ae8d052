"""Audio in: decoding files, the preprocessed store, the built-in demo corpus, augmentations,
and the Lightning data module that crops training batches.

Imports nothing from the other subpackages. ``rave_ddsp.data`` was a module before the
split; its names (``AudioDataModule`` ...) still resolve here, from :mod:`rave_ddsp.data.module`.
"""


OLD_MODULE_NAMES = frozenset({"AudioDataModule", "CropSeedSampler", "FixedCrops", "RandomCrops", "Segment",
                              "split_items"})


def __getattr__(name: str):
    if name not in OLD_MODULE_NAMES:  # submodules (``from rave_ddsp.data import corpus``) are imported as usual
        raise AttributeError(f"module 'rave_ddsp.data' has no attribute {name!r}")
    import importlib

    module = importlib.import_module("rave_ddsp.data.module")  # lazily: the package must not import lightning
    return getattr(module, name)

"""The package layout: imports only point down the layers, and nothing installed builds or downloads."""
import ast
from pathlib import Path
from typing import Dict, List

import pytest

from helpers import ROOT

LAYERS = ["dsp", "nn", "data", "train", "runtime", "analysis"]
"""Subpackages from the bottom up. A module may import from its own subpackage, from any
subpackage below it, and from the modules at the package root (errors, files, plots), which
import no subpackage at all."""


def layer_of(module: str) -> int:
    """-1 for the package root's modules, else the index of the module's subpackage in :data:`LAYERS`."""
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 2 and parts[1] in LAYERS else -1


def imported_modules(path: Path, package_root: Path) -> List[str]:
    """The ``rave_ddsp`` modules (or packages) that the file at ``path`` imports, anywhere in it."""
    module = ".".join(path.relative_to(package_root.parent).with_suffix("").parts)
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names if alias.name.startswith("rave_ddsp")]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                anchor = module.split(".")[: -node.level] if not path.name == "__init__.py" else \
                    module.split(".")[: len(module.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            if base.startswith("rave_ddsp"):
                # "from rave_ddsp.data import corpus" imports the module rave_ddsp.data.corpus
                found += [f"{base}.{alias.name}" if base.count(".") == 1 and base.split(".")[1] in LAYERS else base
                          for alias in node.names]
    return found


def upward_imports(package_root: Path) -> Dict[str, List[str]]:
    """``module: [imports that point up or sideways]`` for every module under ``package_root``."""
    bad = {}
    for path in sorted(package_root.rglob("*.py")):
        module = ".".join(path.relative_to(package_root.parent).with_suffix("").parts).removesuffix(".__init__")
        own = layer_of(module + ".x") if path.name == "__init__.py" else layer_of(module)
        wrong = [target for target in imported_modules(path, package_root)
                 if layer_of(target) > own or (own == -1 and layer_of(target) >= 0)]
        if wrong:
            bad[module] = wrong
    return bad


def test_imports_only_point_down_the_layers():
    assert upward_imports(ROOT / "rave_ddsp") == {}


def test_the_checker_finds_an_upward_import(tmp_path):
    package = tmp_path / "rave_ddsp"
    for folder in ("nn", "train"):
        (package / folder).mkdir(parents=True)
        (package / folder / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "errors.py").write_text("from rave_ddsp.nn import layers\n")          # root -> subpackage
    (package / "nn" / "layers.py").write_text("import torch\nfrom rave_ddsp.errors import UserError\n")
    (package / "nn" / "encoder.py").write_text("def f():\n    from rave_ddsp.train.model import RAVE\n")  # lazy
    (package / "train" / "model.py").write_text("from rave_ddsp.nn import layers\nfrom . import losses\n")
    assert upward_imports(package) == {"rave_ddsp.errors": ["rave_ddsp.nn.layers"],
                                       "rave_ddsp.nn.encoder": ["rave_ddsp.train.model"]}


@pytest.mark.parametrize("needle", ["build.sh", "ensure_libtorch", "urllib", "g++"])
def test_nothing_installed_compiles_or_downloads(needle):
    offenders = [str(path.relative_to(ROOT)) for path in (ROOT / "rave_ddsp").rglob("*.py")
                 if needle in path.read_text()]
    assert offenders == []


def test_every_module_has_a_test_folder_of_its_layer():
    """Tests mirror the tree: tests/<layer>/ for every subpackage."""
    assert {p.name for p in (ROOT / "tests").iterdir() if p.is_dir()} >= set(LAYERS)

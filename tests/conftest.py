"""Shared pytest fixtures.

nn_client (tools/nn_client) is compiled once per libtorch and cached in
.cache/nn_client/<version>/ (about a minute of g++ the first time, then instant), so export
tests can take the binary from these session fixtures:

    def test_export_runs_in_nn_tilde(nn_client_bin, tmp_path):
        res = run_nn_client(path, "--strict", "--threads", "1", binary=nn_client_bin)
        assert parse_report(res.stdout).ok, res.stdout

Environment:
  RAVE_DDSP_NO_NN_CLIENT=1      skip every nn_client test (no C++ compiler)
  RAVE_DDSP_LIBTORCH_COMPAT=1   also run the libtorch 2.5.1 (nn~ 1.6.0) tests: the first
                                run downloads ~906 MB from PyPI and builds a second client
                                (~2 min in all). They also run when .cache/libtorch-2.5.1
                                is already there (scripts/check_libtorch_compat.py fills it).
"""
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
for folder in (ROOT,                        # rave_ddsp importable without `pip install -e .`
               ROOT / "tools" / "nn_client",  # the nn_client driver (a development tool, not installed)
               Path(__file__).parent):      # tests/helpers.py, from tests in any subfolder
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from rave_ddsp.train.cli import avoid_amx_bf16_kernels  # noqa: E402
import nn_client as _nnc  # noqa: E402

avoid_amx_bf16_kernels()  # before any test runs a oneDNN kernel: as scripts/train.py does


SLOW_FIXTURES = {"nn_client_bin", "nn_client_251"}
"""Tests that use these are ``slow`` (they build or run the C++ client)."""


def pytest_collection_modifyitems(items):
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """Tests use one intra-op thread: on a loaded 2-core machine, two threads make small
    convolutions up to 50 times slower (OpenMP contention), and results do not depend on it."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> dict:
    """The session's one tiny trained model (helpers.TINY, 2 steps): its run folder and its offline
    export, for the tests of the runtime and the analysis layers."""
    from helpers import train_checkpoint
    from rave_ddsp.runtime.export import export

    root = tmp_path_factory.mktemp("tiny_run")
    run = train_checkpoint(root / "run").parents[1]
    export(run, root / "model.ts")
    return {"checkpoint": run, "torchscript": root / "model.ts", "ts": root / "model.ts"}


@pytest.fixture(scope="session")
def nn_client_bin() -> Path:
    """nn_client built against this Python's torch (the one models are exported with)."""
    if os.environ.get("RAVE_DDSP_NO_NN_CLIENT") == "1":
        pytest.skip("RAVE_DDSP_NO_NN_CLIENT=1")
    return _nnc.build_nn_client()


@pytest.fixture(scope="session")
def nn_client_251() -> Path:
    """nn_client built against libtorch 2.5.1, the runtime inside nn~ 1.6.0 (opt-in)."""
    if os.environ.get("RAVE_DDSP_NO_NN_CLIENT") == "1":
        pytest.skip("RAVE_DDSP_NO_NN_CLIENT=1")
    cached = (_nnc.cache_dir() / "libtorch-2.5.1" / ".complete").is_file()
    if os.environ.get("RAVE_DDSP_LIBTORCH_COMPAT") != "1" and not cached:
        pytest.skip("libtorch 2.5.1 not fetched: set RAVE_DDSP_LIBTORCH_COMPAT=1 "
                    "or run scripts/check_libtorch_compat.py --self-test")
    return _nnc.build_nn_client(_nnc.ensure_libtorch("2.5.1"))

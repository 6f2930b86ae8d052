"""The nn_client tool itself: it builds, passes a valid model and fails broken ones.

These tests prove the checker can say no; export tests rely on its verdicts.
"""
import importlib.util
import time
import warnings

import pytest
import torch

from nn_client import (EXIT_FAIL, EXIT_USAGE, TOOL_DIR, build_nn_client,
                       parse_report, run_nn_client, write_example_models)

pytestmark = pytest.mark.slow  # builds nn_client and drives it

FAST = ("--seconds", "1", "--threads", "1")


@pytest.fixture(scope="module")
def example_models(tmp_path_factory):
    return write_example_models(tmp_path_factory.mktemp("nn_client_models"))


def test_build_is_cached(nn_client_bin):
    t0 = time.monotonic()
    again = build_nn_client()
    assert again == nn_client_bin
    assert time.monotonic() - t0 < 5.0, "a current binary must not be rebuilt"


def test_valid_model_passes(nn_client_bin, example_models):
    res = run_nn_client(example_models["valid"], "--strict", *FAST, binary=nn_client_bin)
    rep = parse_report(res.stdout)
    # exit 3 may only come from "slower than realtime" warnings on a loaded machine
    assert res.returncode in (0, 3) and rep.ok, res.stdout
    assert rep.verdict == "PASS" or res.returncode == 3
    for method in ("forward", "encode", "decode"):
        assert f"stream: {method}" in res.stdout, res.stdout


def test_valid_model_batch_and_offline_compare(nn_client_bin, example_models):
    # mc.nn~ voices (strided input) and buffered-vs-one-call equality
    res = run_nn_client(example_models["valid"], "--batch", "2", "--compare-offline", *FAST,
                        binary=nn_client_bin)
    assert res.returncode == 0 and parse_report(res.stdout).ok, res.stdout
    assert "identical within tolerance at lag 0" in res.stdout


def test_broken_model_fails(nn_client_bin, example_models):
    res = run_nn_client(example_models["broken"], *FAST, binary=nn_client_bin)
    rep = parse_report(res.stdout)
    assert res.returncode == EXIT_FAIL and rep.verdict == "FAIL", res.stdout
    assert any("nn~ needs [1, 2," in f for f in rep.failures), rep.failures       # channels
    assert any("dtype Double" in f for f in rep.failures), rep.failures           # float64


def test_unloadable_file_fails(nn_client_bin, tmp_path):
    bad = tmp_path / "not_a_model.ts"
    bad.write_bytes(b"this is not a TorchScript archive")
    res = run_nn_client(bad, *FAST, binary=nn_client_bin)
    assert res.returncode == EXIT_FAIL, res.stdout
    assert any("torch::jit::load failed" in f for f in parse_report(res.stdout).failures), res.stdout


def test_missing_file_is_a_usage_error(nn_client_bin, tmp_path):
    res = run_nn_client(tmp_path / "nope.ts", binary=nn_client_bin)
    assert res.returncode == EXIT_USAGE, res.stdout


def test_vendored_example_models(nn_client_bin, tmp_path):
    """tools/nn_client/make_test_models.py: its hand-written model passes, BrokenModel fails."""
    spec = importlib.util.spec_from_file_location("make_test_models", TOOL_DIR / "make_test_models.py")
    mtm = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mtm)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.script(mtm.HandWritten().eval()).save(str(tmp_path / "handwritten.ts"))
        torch.jit.script(mtm.BrokenModel().eval()).save(str(tmp_path / "broken.ts"))
    good = run_nn_client(tmp_path / "handwritten.ts", *FAST, binary=nn_client_bin)
    assert good.returncode == 0 and parse_report(good.stdout).ok, good.stdout
    bad = run_nn_client(tmp_path / "broken.ts", *FAST, binary=nn_client_bin)
    rep = parse_report(bad.stdout)
    assert bad.returncode == EXIT_FAIL and len(rep.failures) >= 8, bad.stdout


def test_libtorch_251_client(nn_client_251, example_models):
    """The 2.5.1 client runs a valid model saved by this torch, and is really 2.5.1:
    torch.stft's saved wrapper (torch >= 2.7) calls an aten::stft overload 2.5.1 lacks."""
    ok = run_nn_client(example_models["valid"], "--strict", *FAST, binary=nn_client_251)
    assert ok.returncode in (0, 3) and parse_report(ok.stdout).ok, ok.stdout
    stft = run_nn_client(example_models["uses_torch_stft"], *FAST, binary=nn_client_251)
    if tuple(int(v) for v in torch.__version__.split("+")[0].split(".")[:2]) >= (2, 7):
        assert stft.returncode == EXIT_FAIL, stft.stdout
        assert any("torch::jit::load failed" in f for f in parse_report(stft.stdout).failures)

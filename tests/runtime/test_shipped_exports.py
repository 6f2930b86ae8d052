"""Exports of the shipped configs (untrained weights), mono and stereo, streaming and not, through nn_client.

nn_client drives each file as nn~ does, ``--strict``: at buffer 2048 with 4 mc voices, and at
the smallest legal buffer (nn~'s buffer 0: the model's hop). For v2 both are 2048.
"""

import pytest
import torch

from rave_ddsp.train.cli import model_from_config
from rave_ddsp.runtime.export import build
from nn_client import parse_report, run_nn_client

from helpers import ROOT

pytestmark = pytest.mark.slow  # builds and runs nn_client on every shipped config
CASES = [(config, channels, streaming) for config in ("demo", "small", "v2", "live") for channels in (1, 2)
         for streaming in (False, True)]


def case_id(case) -> str:
    config, channels, streaming = case
    return f"{config}-{'stereo' if channels == 2 else 'mono'}-{'streaming' if streaming else 'offline'}"


@pytest.fixture(scope="module")
def export_folder(tmp_path_factory):
    return tmp_path_factory.mktemp("shipped")


@pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])
def test_shipped_config_export_passes_nn_client(case, export_folder, nn_client_bin):
    config, channels, streaming = case
    torch.manual_seed(0)
    model = model_from_config(ROOT / "configs" / f"{config}.yaml", channels=channels, streaming=streaming).eval()
    path = export_folder / f"{case_id(case)}.ts"
    torch.jit.save(build(model, model.hparams.latent_size), str(path))
    runs = [("--buffer", "2048", "--batch", "4")]
    if model.hop_length < 2048:
        runs.append(("--buffer", "0"))
    for args in runs:
        result = run_nn_client(path, "--strict", "--threads", "1", "--seconds", "1", *args, binary=nn_client_bin)
        report = parse_report(result.stdout)
        assert report.ok, result.stdout[-3000:]
        assert "voice 0 of the batch equals a batch-1 run" in result.stdout or "--batch" not in args

"""What each branch of trained rave_ddsp models carries, on held-out audio: numbers and spectrograms.

    .venv/bin/python -m benchmarks.noise_branch_report --models RUN [RUN ...] --data DIR [DIR ...]
        --output benchmarks/results/noise_branch_parts [--figure-files phrase_000 ...]

For every file (each model's rate; the files are reconstructed as scripts/evaluate.py does):

* the noise branch's energy share of the output (dB), overall and in the 4 highest PQMF bands'
  frequency range (the top quarter of the spectrum);
* the spectral floor (between the partials: the 25 % quantile of the STFT power in cells of
  16 bins and 3 frames, rescaled to the mean for noise; :class:`rave_ddsp.train.losses.NoiseFloorDistance`)
  of the input, of the waveform branch alone and of the noise branch alone, and the waveform
  branch's floor relative to the input's (dB, median over the cells where the input is within
  60 dB of its peak): how much hiss the waveform branch paints between the partials.

Writes ``OUTPUT.json`` (per file and means per model and folder) and, for the files named by
``--figure-files`` (stems), ``OUTPUT_<stem>.png``: input, then per model the reconstruction, its
waveform branch and its noise branch, on one dB scale.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np
import torch

from benchmarks.common import machine
from rave_ddsp.analysis.evaluation import load_reference
from rave_ddsp.data.audio import find_audio_files
from rave_ddsp.dsp.filtered_noise import share_db
from rave_ddsp.files import save_figure, write_json
from rave_ddsp.plots import plt, spectrogram_panels
from rave_ddsp.runtime.codec import Codec
from rave_ddsp.runtime.inference import load, noise_level
from rave_ddsp.train.losses import NoiseFloorDistance

FLOOR_FFT, FLOOR_CELL = 2048, 16
RANGE_DB = 60.0


def parts(codec: Codec, reference: torch.Tensor):
    """``(reconstruction, waveform branch, noise branch)`` of ``reference [C, T]``, ``[C, T]`` each."""
    (output,) = codec.reconstruct([reference])
    with noise_level(codec.model, 0.0):
        (waveform,) = codec.reconstruct([reference])
    return output, waveform, output - waveform


def high_band_share(noise: torch.Tensor, output: torch.Tensor) -> float:
    """Noise share (dB) in the top quarter of the spectrum."""
    def energy(x: torch.Tensor) -> torch.Tensor:
        spectrum = torch.fft.rfft(x.double(), dim=-1).abs().pow(2)
        return spectrum[..., 3 * spectrum.shape[-1] // 4:].sum()
    return float(share_db(energy(noise), energy(output)))


def floor_db(floors: NoiseFloorDistance, x: torch.Tensor) -> torch.Tensor:
    """``[cells, frames]`` spectral floor in dB of ``x [C, T]`` (channels averaged)."""
    return 10 * torch.log10(floors.floor(x[None]).mean(0) + 1e-20)


def file_row(codec: Codec, floors: NoiseFloorDistance, reference: torch.Tensor) -> Dict[str, float]:
    output, waveform, noise = parts(codec, reference)
    target, wave_floor, noise_floor = (floor_db(floors, x) for x in (reference, waveform, noise))
    active = target > target.max() - RANGE_DB
    return {
        "noise_share_db": float(share_db(noise.pow(2).sum(), output.pow(2).sum())),
        "noise_share_high_quarter_db": high_band_share(noise, output),
        "waveform_floor_vs_input_db": float((wave_floor - target)[active].median()),
        "noise_floor_vs_input_db": float((noise_floor - target)[active].median()),
    }


def figure(reference: torch.Tensor, rows: Sequence[tuple], sample_rate: int, title: str):
    signals = [reference.mean(0).numpy()]
    titles = ["input"]
    for name, output, waveform, noise in rows:
        signals += [output.mean(0).numpy(), waveform.mean(0).numpy(), noise.mean(0).numpy()]
        titles += [f"{name}: reconstruction", f"{name}: waveform branch", f"{name}: noise branch"]
    return spectrogram_panels(signals, titles, sample_rate, suptitle=title)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", type=Path, required=True)
    parser.add_argument("--data", nargs="+", type=Path, required=True)
    parser.add_argument("--output", type=Path, required=True, help="path without suffix")
    parser.add_argument("--figure-files", nargs="*", default=[])
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    models = [load(path) for path in args.models]
    report: Dict = {"machine": machine(), "models": [str(p) for p in args.models], "folders": {}}
    for folder in args.data:
        files, _ = find_audio_files([folder])
        per_model: Dict[str, List[dict]] = {}
        for model in models:
            codec, floors = Codec(model), NoiseFloorDistance(FLOOR_FFT, FLOOR_CELL)
            rows = []
            for path, name in files:
                reference = load_reference(path, model)
                rows.append({"file": name, **file_row(codec, floors, reference)})
            per_model[model.source.name] = rows
        means = {name: {key: float(np.mean([r[key] for r in rows])) for key in rows[0] if key != "file"}
                 for name, rows in per_model.items()}
        report["folders"][str(folder)] = {"files": per_model, "means": means}
        for name, mean in means.items():
            print(f"{folder.name} {name}: " + ", ".join(f"{k} {v:.1f}" for k, v in mean.items()))
        for path, name in files:
            if Path(name).stem not in args.figure_files:
                continue
            reference = load_reference(path, models[0])
            rows = [(model.source.name, *parts(Codec(model), reference)) for model in models]
            fig = figure(reference, rows, models[0].sample_rate, f"{name}: each branch alone")
            target = args.output.parent / f"{args.output.name}_{Path(name).stem}.png"
            save_figure(fig, target, dpi=90)
            plt.close(fig)
            print(f"wrote {target}")
    write_json(args.output.with_suffix(".json"), report)
    print(f"wrote {args.output.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""How noisy and how bright each instrument of a folder is, by the floor estimate the noise branch trains on.

    PYTHONPATH=. .venv/bin/python -m benchmarks.dev_floors ../shared/data/dev/phrases [--output dev_floors]

For each file (instrument: the stem before ``_phrase`` or the first ``_<digits>``): the spectral
floor of :mod:`benchmarks.noise_branch_report` (the 25 % quantile of the STFT power in cells of 16
bins and 3 frames, rescaled to the mean for noise) summed over the file, relative to its total
power (dB: how much of the sound lies in the floor between partials), and the power above 11 kHz
relative to the total (dB). Means per instrument go to ``benchmarks/results/OUTPUT.json``.
"""
from __future__ import annotations

import argparse
import re
from collections import defaultdict
from pathlib import Path
from typing import Dict, List

import torch

from benchmarks.common import write_results
from benchmarks.noise_branch_report import FLOOR_CELL, FLOOR_FFT
from rave_ddsp.data.audio import find_audio_files, load_audio
from rave_ddsp.train.losses import NoiseFloorDistance

SAMPLE_RATE = 44100
HIGH_HZ = 11025.0


def instrument(stem: str) -> str:
    return re.split(r"_phrase|_\d", stem, maxsplit=1)[0]


def file_levels(path: Path, estimator: NoiseFloorDistance) -> Dict[str, float]:
    audio = torch.from_numpy(load_audio(path, SAMPLE_RATE, 1))[None]  # [1, 1, T]
    with torch.no_grad():
        floor = estimator.floor(audio)  # [1, cells, frames]
        power = estimator.cells(estimator.power(audio[0])).mean(2)  # the same cells' mean power
    high = int(HIGH_HZ / (SAMPLE_RATE / 2) * power.shape[1])
    return {"floor_vs_total_db": float(10 * torch.log10(floor.sum() / power.sum())),
            "above_11khz_db": float(10 * torch.log10(power[:, high:].sum() / power.sum()))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--output", default="dev_floors", help="results name (default dev_floors)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    estimator = NoiseFloorDistance(FLOOR_FFT, FLOOR_CELL)
    per: Dict[str, List[Dict[str, float]]] = defaultdict(list)
    files, _ = find_audio_files([args.folder])
    for path, _name in files:
        per[instrument(path.stem)].append(file_levels(path, estimator))
    means = {name: {key: sum(row[key] for row in rows) / len(rows) for key in rows[0]} | {"files": len(rows)}
             for name, rows in sorted(per.items())}
    for name, row in means.items():
        print(f"{name:>22}: floor {row['floor_vs_total_db']:6.1f} dB of the total, "
              f"above 11 kHz {row['above_11khz_db']:6.1f} dB ({row['files']} files)")
    settings = {"folder": str(args.folder), "fft": FLOOR_FFT, "cell_bins": FLOOR_CELL, "above_hz": HIGH_HZ}
    print(f"-> {write_results(args.output, settings, means)}")


if __name__ == "__main__":
    main()

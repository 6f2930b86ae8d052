"""CREPE against the written notes of the dev set: is the F0 metric's reference right, are the models pitched?

    PYTHONPATH=. .venv/bin/python -m benchmarks.dev_pitch ../shared/data/dev/phrases [--instruments violin ...]
        [--model RUN_OR_TS ...] [--crepe-model tiny|full] [--output dev_pitch]

The dev folders' ``metadata.json`` gives every note (phrases: onset, offset and MIDI pitch; notes: note on
and off, pitch). For each file, and for its reconstruction by each ``--model``, CREPE's F0 is
compared with the written pitch over the frames inside a note (from 50 ms after its onset to 20 ms
before its offset; frames where two notes overlap are left out): the fraction of those frames where
CREPE is confident (>= 0.85, the F0 metric's threshold), the median |error| in cents over the
confident ones, and the fraction of all note frames within 50 cents of the note. ``scripts/evaluate.py``
scores a model's F0 against CREPE on the input; this checks that input track against the score, and
says whether a model's output has a pitch at all. Means per instrument and model go to
``benchmarks/results/OUTPUT.json`` with the machine.
"""
from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch

from benchmarks.common import write_results
from rave_ddsp.analysis import metrics
from rave_ddsp.analysis.evaluation import F0_CONFIDENCE as CONFIDENCE
from rave_ddsp.data.audio import load_audio
from rave_ddsp.runtime.codec import Codec
from rave_ddsp.runtime.inference import load

SAMPLE_RATE = 44100
ONSET_SKIP_S = 0.05
OFFSET_SKIP_S = 0.02
NEAR_CENTS = 50.0


def written_pitch(item: dict, frames: int) -> np.ndarray:
    """Hz per CREPE frame inside a note, NaN elsewhere (and where notes overlap)."""
    notes = item.get("notes") or [[item["note_on_s"], item["note_off_s"], item["pitch"], item["velocity"]]]
    times = np.arange(frames) * metrics.CREPE_HOP / metrics.CREPE_SAMPLE_RATE
    hz = np.full(frames, np.nan)
    taken = np.zeros(frames, dtype=bool)
    overlap = np.zeros(frames, dtype=bool)
    for onset, offset, pitch, _velocity in notes:
        inside = (times >= onset + ONSET_SKIP_S) & (times <= offset - OFFSET_SKIP_S)
        overlap |= inside & taken
        taken |= inside
        hz[inside] = 440.0 * 2 ** ((pitch - 69) / 12)
    hz[overlap] = np.nan
    return hz


def score(audio: torch.Tensor, item: dict, crepe_model: str) -> Dict[str, float]:
    """``audio [C, T]`` at :data:`SAMPLE_RATE` against ``item``'s notes."""
    hz, confidence = metrics.f0(audio[None], SAMPLE_RATE, crepe_model)
    hz, confidence = hz[0].numpy(), confidence[0].numpy()
    written = written_pitch(item, len(hz))
    inside = ~np.isnan(written)
    cents = np.abs(1200 * np.log2(hz[inside] / written[inside]))
    confident = confidence[inside] >= CONFIDENCE
    return {"note_frames": int(inside.sum()), "confident": float(confident.mean()),
            "median_cents_confident": float(np.median(cents[confident])) if confident.any() else float("nan"),
            "within_50_cents": float((cents < NEAR_CENTS).mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="a dev folder with metadata.json (phrases/ or notes/)")
    parser.add_argument("--instruments", nargs="+", help="only these instruments (default: all)")
    parser.add_argument("--velocity", type=int, help="notes: only this velocity")
    parser.add_argument("--model", nargs="+", default=[], help="also score each file's reconstruction by these")
    parser.add_argument("--crepe-model", choices=["tiny", "full"], default="tiny")
    parser.add_argument("--output", default="dev_pitch", help="results name (default dev_pitch)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    items = json.loads((args.folder / "metadata.json").read_text())["items"]
    chosen = {stem: item for stem, item in sorted(items.items())
              if (not args.instruments or item["instrument"] in args.instruments)
              and (args.velocity is None or item.get("velocity") == args.velocity)}
    models = [(source, Codec(load(source))) for source in args.model]
    for source, codec in models:
        if codec.model.sample_rate != SAMPLE_RATE:
            raise SystemExit(f"{source}: {codec.model.sample_rate} Hz; this check runs at {SAMPLE_RATE} Hz")
    rows: Dict[str, Dict[str, List[Dict[str, float]]]] = defaultdict(lambda: defaultdict(list))
    for stem, item in chosen.items():
        audio = torch.from_numpy(load_audio(args.folder / f"{stem}.flac", SAMPLE_RATE, 1))  # [1, T]
        rows["input"][item["instrument"]].append(score(audio, item, args.crepe_model))
        for source, codec in models:
            with torch.no_grad():
                (output,) = codec.reconstruct([audio])
            rows[source][item["instrument"]].append(score(output[:1].cpu(), item, args.crepe_model))
    means: Dict[str, Dict[str, Dict[str, Optional[float]]]] = {}
    for what, per in rows.items():
        means[what] = {}
        for name, scores in per.items():
            mean = {key: metrics.mean_and_ci95([s[key] for s in scores]).mean  # NaNs dropped
                    for key in scores[0] if key != "note_frames"}
            means[what][name] = mean | {"files": len(scores)}
            print(f"{what:>40} {name:>22}: confident {mean['confident']:.2f}, median error when confident "
                  f"{mean['median_cents_confident']:.0f} cents, within 50 cents {mean['within_50_cents']:.2f} "
                  f"({len(scores)} files)")
    settings = {"folder": str(args.folder), "instruments": args.instruments, "velocity": args.velocity,
                "models": args.model, "crepe_model": args.crepe_model, "confidence": CONFIDENCE,
                "onset_skip_s": ONSET_SKIP_S, "offset_skip_s": OFFSET_SKIP_S, "near_cents": NEAR_CENTS}
    print(write_results(args.output, settings, means))


if __name__ == "__main__":
    main()

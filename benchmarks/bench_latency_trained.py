"""Latency of trained streaming exports, measured on the energy envelope: the official RAVE's too.

    python -m benchmarks.bench_latency_trained --rave-run RAVE_RUN [RAVE_RUN ...] --ours RUN [RUN ...]
        --audio FILE [FILE ...] [--buffer 2048] [--seconds 20] [--note-seconds 0.5]

:mod:`benchmarks.bench_latency` times exports by matching the streamed output sample for sample
with the one-call output (or by their cross-correlation). The official RAVE's exports draw random
numbers at every call (``encode`` samples the posterior), so neither applies to them: on untrained
weights the output barely follows the input, and even trained, the waveforms of two calls differ.
What does follow the input, once trained, is the output's energy: notes start and stop. So here

* the streaming export is fed the audio (:func:`read_audio`: a phrase, or notes separated by
  irregular silences) buffer by buffer, as nn~ does, and the offline export of the same run all at once;
* both outputs become RMS envelopes (mean removed) in frames of 256 samples; the delay is the lag
  that maximises their correlation, refined in frames of 64 samples around it (so it is known to
  +-64 samples, 1.5 ms at 44.1 kHz). The peak (normalised, 1: the same envelope shifted) and the
  best value more than 4 frames away show how sharply the lag stands out.

Our own trained runs go through the same method as a check: their delay is known exactly (the
export reports it, and :mod:`benchmarks.bench_latency` confirms it sample for sample).

RAVE's run (a folder as ``benchmarks/train_rave_baseline.py`` leaves it: ``config.gin``,
``version_0/checkpoints/last.ckpt``) is exported, streaming and offline, by RAVE's own script in
its venv (``benchmarks/setup_rave_venv.sh``). Writes ``benchmarks/results/latency_trained.json``.
"""
from __future__ import annotations

import argparse
import subprocess
import tempfile
from pathlib import Path
from typing import Dict, List

import torch

from benchmarks.common import write_results
from benchmarks.compare_rave import require_rave_venv
from rave_ddsp.data.audio import load_audio

ROOT = Path(__file__).resolve().parents[1]
FRAMES = (256, 64)
"""Samples per envelope frame: the coarse search, then the refinement around it."""


def envelope(x: torch.Tensor, frame: int) -> torch.Tensor:
    """``[T] -> [T // frame]`` RMS per frame, its mean removed (linear: a log envelope lets the
    fluctuations of quiet passages weigh as much as the notes)."""
    rms = x[: len(x) // frame * frame].reshape(-1, frame).pow(2).mean(-1).sqrt()
    return rms - rms.mean()


def normalised_correlation(a: torch.Tensor, b: torch.Tensor, lags: range) -> torch.Tensor:
    """For each lag ``k``: the cosine of ``a[k:]`` (delayed output) and ``b[:len - k]`` (reference)."""
    values = []
    for k in lags:
        n = min(len(a) - k, len(b))
        x, y = a[k:k + n], b[:n]
        values.append(float((x * y).sum() / (x.norm() * y.norm()).clamp_min(1e-20)))
    return torch.tensor(values)


def envelope_lag(stream: torch.Tensor, reference: torch.Tensor, max_lag: int) -> Dict[str, float]:
    """The delay of ``stream`` behind ``reference`` (both ``[T]``) from their RMS envelopes: the best lag
    in frames of 256 samples up to ``max_lag``, then in frames of 64 within one coarse frame of it; with the
    coarse peak (1: the same envelope shifted) and the best coarse value more than 4 frames away."""
    coarse_frame, fine_frame = FRAMES
    coarse = normalised_correlation(envelope(stream, coarse_frame), envelope(reference, coarse_frame),
                                    range(0, max_lag // coarse_frame + 1))
    best = int(coarse.argmax())
    away = coarse.clone()
    away[max(0, best - 4):best + 5] = -1.0
    step = coarse_frame // fine_frame
    fine_lags = range(max(0, (best - 1) * step), (best + 1) * step + 1)
    fine = normalised_correlation(envelope(stream, fine_frame), envelope(reference, fine_frame), fine_lags)
    return {"lag": (fine_lags.start + int(fine.argmax())) * fine_frame, "coarse_lag": best * coarse_frame,
            "peak": float(coarse[best]), "next_peak": float(away.max()), "resolution": fine_frame}


def read_audio(paths: List[Path], rate: int, seconds: float, note_seconds: float) -> torch.Tensor:
    """``[1, 1, T]`` mono at ``rate``, padded to whole 2048-sample buffers: one file's first ``seconds``,
    or, given several, the first ``note_seconds`` of each in turn, each followed by a silence of 0.15 to
    0.75 s (seeded; irregular, so that no lag is ambiguous by a period), until ``seconds``."""
    pieces = [torch.from_numpy(load_audio(path, rate, channels=1)[0]) for path in paths]
    if len(pieces) == 1:
        audio = pieces[0][: int(seconds * rate)]
    else:
        generator = torch.Generator().manual_seed(0)
        parts, total, index = [], 0, 0
        while total < seconds * rate:
            gap = int(rate * (0.15 + 0.6 * float(torch.rand(1, generator=generator))))
            parts += [pieces[index % len(pieces)][: int(note_seconds * rate)], torch.zeros(gap)]
            total += parts[-2].numel() + gap
            index += 1
        audio = torch.cat(parts)[: int(seconds * rate)]
    return torch.nn.functional.pad(audio, (0, -len(audio) % 2048))[None, None]


def run_outputs(paths: Dict[str, Path], audio: torch.Tensor, buffer: int) -> Dict[str, torch.Tensor]:
    """``forward`` of the offline export in one call and of the streaming export buffer by buffer."""
    torch.manual_seed(0)
    with torch.no_grad():
        reference = torch.jit.load(str(paths["offline"])).forward(audio)
        stream_module = torch.jit.load(str(paths["streaming"]))
        stream = torch.cat([stream_module.forward(chunk) for chunk in audio.split(buffer, -1)], -1)
    return {"stream": stream.flatten().double(), "reference": reference.flatten().double()}


def export_ours(run: Path, folder: Path) -> Dict[str, object]:
    from rave_ddsp.runtime.export import export, load_model

    folder = Path(tempfile.mkdtemp(dir=folder))  # a folder per run: runs may share a name
    paths = {"streaming": folder / "streaming.ts", "offline": folder / "offline.ts"}
    for name, path in paths.items():
        export(run, path, streaming=name == "streaming")
    model = load_model(run, streaming=True)
    return {**paths, "reported_delay": int(model.forward_delay), "sample_rate": int(model.hparams.sample_rate)}


def export_official(run: Path, folder: Path) -> Dict[str, object]:
    python = require_rave_venv()
    folder = Path(tempfile.mkdtemp(dir=folder))  # RAVE's exports are named by kind only: a folder per run
    paths = {}
    for name, streaming in (("streaming", True), ("offline", False)):
        code = ("import sys; from pathlib import Path; from benchmarks.bench_rave_baseline import export_run; "
                f"print(export_run(Path({str(run)!r}), Path({str(folder)!r}), {name!r}, streaming={streaming}))")
        done = subprocess.run([str(python), "-W", "ignore", "-c", code], cwd=ROOT, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"RAVE's export of {run} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
        paths[name] = Path(done.stdout.strip().splitlines()[-1])
    return {**paths, "reported_delay": None, "sample_rate": 44100}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rave-run", type=Path, nargs="*", default=[], help="trained official RAVE run folders")
    parser.add_argument("--ours", type=Path, nargs="*", default=[], help="trained rave_ddsp run folders")
    parser.add_argument("--audio", type=Path, nargs="+", required=True,
                        help="a phrase with clear onsets, or several notes (see read_audio)")
    parser.add_argument("--note-seconds", type=float, default=0.5)
    parser.add_argument("--buffer", type=int, default=2048)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--max-lag", type=int, default=65536)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows: List[Dict[str, object]] = []
    with tempfile.TemporaryDirectory() as tmp:
        exports = [(run, export_ours(run, Path(tmp))) for run in args.ours]
        exports += [(run, export_official(run, Path(tmp))) for run in args.rave_run]
        for run, exported in exports:
            audio = read_audio(args.audio, exported["sample_rate"], args.seconds, args.note_seconds)
            outputs = run_outputs(exported, audio, args.buffer)
            found = envelope_lag(outputs["stream"], outputs["reference"], args.max_lag)
            rate, reported = exported["sample_rate"], exported["reported_delay"]
            row = {"run": str(run), "buffer": args.buffer, "sample_rate": rate, "reported_delay": reported,
                   **found, "lag_ms": 1000.0 * found["lag"] / rate}
            rows.append(row)
            said = "not reported" if reported is None else f"reported {reported}"
            print(f"{run}: {said}; by the envelope {found['lag']} samples ({row['lag_ms']:.1f} ms; 256-sample frames: "
                  f"{found['coarse_lag']}, peak {found['peak']:.2f}, next {found['next_peak']:.2f})", flush=True)
    settings = {"audio": [str(path) for path in args.audio], "note_seconds": args.note_seconds,
                "seconds": args.seconds, "buffer": args.buffer, "threads": 1, "frames": list(FRAMES),
                "method": "RMS envelopes (mean removed) correlated in 256-sample frames, refined in 64"}
    print(f"wrote {write_results('latency_trained', settings, rows)}")


if __name__ == "__main__":
    main()

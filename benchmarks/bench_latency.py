"""Latency measured: when a streaming export's output comes out, at every nn~ buffer size.

    python -m benchmarks.bench_latency [--seconds 6] [--configs demo small v2 live] [--no-rave] [--no-nn-client]

For each shipped config, as shipped (small and v2: ``lookahead_ms: 100``; live: causal, 4.7 ms), fully
centred (``lookahead_ms: null``) and with ``configs/causal.yaml`` (not for live, which is causal), this
builds the streaming and the offline TorchScript exports (untrained weights: timing does not depend on
them), feeds a click train with a little noise through the streaming export buffer by buffer (one
``forward`` call per buffer, as nn~ does; a fresh load per buffer size), and finds the lag at which its
output matches the offline export's one-call output. That lag is the measured algorithmic delay; nn~ run
with buffer ``B`` adds ``2B`` (a buffer of input fills while the previous one is computed on nn~'s thread),
so a player hears ``measured + 2B``. Each export is measured three ways:

* in this process (torch of this venv; least squares over every lag up to twice the reported delay plus a
  frame, with the next best lag's residual to show how sharply the match stands out);
* by the cross-correlation of the two outputs (:func:`correlation_lag`): no sample-exact match needed,
  so it also times exports that draw random numbers at each call, as the official RAVE's does, and it
  checks itself on ours;
* by ``tools/nn_client`` built against libtorch 2.5.1, the runtime of the nn~ 1.6.0 binaries, which drives
  the file as nn~ does (``--signal clicks --reference OFFLINE.ts --method forward``; FFT cross-correlation;
  libtorch fetched once from PyPI into ``.cache/libtorch-2.5.1``, as ``scripts/check_libtorch_compat.py``
  does). With untrained weights its search can settle one latent frame short where the latent barely
  moves (the least-squares search above reports how sharply its lag stands out).

The official RAVE v2 and its causal variant (RAVE's ``causal.gin``), exported by RAVE's own script in its
venv (``benchmarks/setup_rave_venv.sh``; ``--no-rave`` leaves them out), go through the same
measurements at buffer 2048, its hop; RAVE reports no delay of its own, and its untrained exports draw
random numbers in ``encode`` (the posterior sample) and ``decode`` (noise in the latent dimensions that
fidelity drops), so only the correlation applies to them, and it is taken only where its peak stands out
(on an untrained model's output, steady and barely driven by the input, the correlation is flat: our
untrained exports show the same, and only the sample-exact match times them).

Writes ``benchmarks/results/latency.json`` (machine, settings; per variant the reported delay and, per
buffer size, the delay by each method, the one taken (``delay``: the exact lag where the outputs match
sample for sample, else the correlation's) and the total a player hears in nn~).
"""
from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Optional

import torch

from benchmarks.bench_stream import load_model_args
from benchmarks.common import write_results
from benchmarks.compare_rave import export_rave
from rave_ddsp.runtime.export import nn_tilde_buffering

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools" / "nn_client"))  # the nn~ driver is a tool, not installed
import nn_client  # noqa: E402

BUFFERS = (128, 256, 512, 1024, 2048)
EXACT_MATCH = 1e-3  # relative squared error below which the sample-exact lag is taken
SHARP_PEAK = 0.1  # a correlation lag is taken when its normalised peak exceeds every other by this much
# nn_client's verdict on the streamed output against the one-call reference; the start-up transient (the
# first output after the delay) leaves a relative RMS error near 1e-2 on untrained models, hence --tol 0.05
ALIGNMENT = re.compile(r"buffered stream vs one call: (?:a pure delay of (\d+) samples|differs beyond a delay: .*? "
                       r"at lag (\d+) samples|(identical) within tolerance at lag 0)")


def click_train(samples: int, sample_rate: int) -> torch.Tensor:
    """``[1, 1, samples]``: unit clicks 0.3 to 0.9 s apart (irregular: no lag is ambiguous by a period) on
    noise at -40 dBFS."""
    generator = torch.Generator().manual_seed(0)
    x = 0.01 * torch.randn(1, 1, samples, generator=generator)
    t = 0
    while t < samples:
        x[..., t] += 1.0
        t += int(sample_rate * (0.3 + 0.6 * float(torch.rand(1, generator=generator))))
    return x


def correlation_lag(stream: torch.Tensor, reference: torch.Tensor, max_lag: int, settle: int) -> Dict[str, float]:
    """The lag in ``[0, max_lag]`` maximising the cross-correlation of the two outputs, its normalised peak
    (1: the same signal shifted) and the highest normalised value more than a latent-frame-sized
    neighbourhood (256 samples) away from it (how sharply the peak stands out).

    Unlike :func:`measured_lag` it needs no sample-exact match: where an export draws random numbers at
    every call (the official RAVE's samples its latent, and fills dropped latent dimensions with noise), the
    random part is uncorrelated with the reference and the peak stays at the delay of the rest.
    """
    a, b = stream.flatten()[settle:].double(), reference.flatten()[settle:].double()
    n = min(len(a), len(b))
    a, b = a[:n] - a[:n].mean(), b[:n] - b[:n].mean()  # an offset would correlate at every lag
    size = 1 << (2 * n - 1).bit_length()
    correlation = torch.fft.irfft(torch.fft.rfft(a, size) * torch.fft.rfft(b, size).conj(), size)[: max_lag + 1]
    correlation = correlation / (a.norm() * b.norm()).clamp_min(1e-20)
    lag = int(correlation.argmax())
    away = correlation.clone()
    away[max(0, lag - 256):lag + 257] = -1.0
    return {"lag": lag, "peak": float(correlation[lag]), "next_peak": float(away.max()) if len(away) > 513 else -1.0}


def measured_lag(stream: torch.Tensor, reference: torch.Tensor, max_lag: int, settle: int) -> Dict[str, float]:
    """The lag ``L`` minimising the relative squared error of ``stream[L:]`` against ``reference``."""
    length = reference.shape[-1]
    errors = []
    for lag in range(0, min(max_lag, length - 2 * settle) + 1):
        a = stream[..., lag + settle:length]
        b = reference[..., settle:length - lag]
        errors.append(float((a - b).pow(2).mean() / b.pow(2).mean().clamp_min(1e-20)))
    lag = min(range(len(errors)), key=errors.__getitem__)
    others = errors[:lag] + errors[lag + 1:]
    # the best lag must stand out: the next best lag's error shows how sharp the match is
    return {"lag": lag, "relative_error": errors[lag], "next_best_error": min(others) if others else float("nan")}


def nn_client_lag(binary: Path, stream: Path, offline: Path, buffer: int, seconds: float,
                  max_lag: int) -> Optional[int]:
    """The delay nn_client (libtorch 2.5.1) finds between the streamed ``forward`` and the one-call
    reference, clicks as input; None if it finds none (its report is printed)."""
    done = nn_client.run_nn_client(stream, "--method", "forward", "--buffer", str(buffer), "--reference",
                                   str(offline), "--signal", "clicks", "--seconds", str(seconds), "--threads", "1",
                                   "--max-lag", str(max_lag), "--tol", "0.05", binary=binary)
    found = ALIGNMENT.search(done.stdout)
    if found is None or found.group(2) is not None:  # no verdict, or no delay explains the difference
        print(done.stdout[-2000:])
        return None
    return 0 if found.group(3) else int(found.group(1))


def measure_pair(paths: Dict[str, Path], hop: int, rate: int, reported: Optional[int], seconds: float,
                 binary: Optional[Path], label: str, max_lag: int) -> List[Dict[str, object]]:
    """Per buffer size (multiples of ``hop`` in BUFFERS): the delay measured here and by nn_client."""
    samples = (int(seconds * rate) // 2048 + 1) * 2048
    audio = click_train(samples, rate)
    with torch.no_grad():
        reference = torch.jit.load(str(paths["offline"])).forward(audio)
    rows: List[Dict[str, object]] = []
    for buffer in [b for b in BUFFERS if b >= hop and b % hop == 0]:
        stream_module = torch.jit.load(str(paths["streaming"]))
        with torch.no_grad():
            stream = torch.cat([stream_module.forward(chunk) for chunk in audio.split(buffer, -1)], -1)
        found = measured_lag(stream, reference, max_lag, settle=2 * hop)
        correlated = correlation_lag(stream, reference, max_lag, settle=2 * hop)
        exact = found["relative_error"] < EXACT_MATCH  # else the outputs differ beyond a delay (random draws)
        sharp = correlated["peak"] - correlated["next_peak"] > SHARP_PEAK
        delay = found["lag"] if exact else correlated["lag"] if sharp else None
        row = {"buffer": buffer, "measured_delay": found["lag"], "relative_error": found["relative_error"],
               "next_best_error": found["next_best_error"], "correlation_delay": correlated["lag"],
               "correlation_peak": correlated["peak"], "correlation_next_peak": correlated["next_peak"],
               "delay": delay, "method": "exact" if exact else "correlation" if sharp else None,
               "in_nn_tilde": None if delay is None else delay + nn_tilde_buffering(buffer, hop)[1]}
        row["in_nn_tilde_ms"] = None if delay is None else 1000.0 * row["in_nn_tilde"] / rate
        if binary is not None:
            row["nn_client_251_delay"] = nn_client_lag(binary, paths["streaming"], paths["offline"], buffer, seconds,
                                                       max_lag)
        rows.append(row)
        said = "" if reported is None else f"reported {reported} samples ({1000.0 * reported / rate:.1f} ms), "
        client = "" if binary is None else f", nn_client (libtorch 2.5.1) {row['nn_client_251_delay']}"
        print(f"{label:15s} buffer {buffer:4d}: {said}measured {found['lag']} (residual {found['relative_error']:.1e}, "
              f"next best lag {found['next_best_error']:.1e}), by correlation {correlated['lag']} (peak "
              f"{correlated['peak']:.2f}, next {correlated['next_peak']:.2f}){client}; "
              + ("no method finds the delay (outputs differ beyond a delay; correlation peak not sharp)"
                 if delay is None
                 else f"in nn~ {row['in_nn_tilde']} samples ({row['in_nn_tilde_ms']:.1f} ms)"))
    return rows


def variant_args(config: str, variant: str) -> Dict[str, object]:
    args = load_model_args(ROOT / "configs" / f"{config}.yaml")
    if variant == "centred":
        args["lookahead_ms"] = None
    elif variant == "causal":
        args["causal"] = True
    return args


def measure(config: str, variant: str, seconds: float, out_dir: Path, binary: Optional[Path]) -> Dict[str, object]:
    from rave_ddsp.runtime.export import build
    from rave_ddsp.train.model import RAVE

    args = variant_args(config, variant)
    paths = {}
    for name, streaming in (("streaming", True), ("offline", False)):
        torch.manual_seed(0)
        model = RAVE(**args, streaming=streaming).eval()
        paths[name] = out_dir / f"{config}_{variant}_{name}.ts"
        torch.jit.save(build(model, model.hparams.latent_size), str(paths[name]))
    hop, rate, reported = model.hop_length, model.hparams.sample_rate, model.forward_delay
    rows = measure_pair(paths, hop, rate, reported, seconds, binary, f"{config} {variant}", 2 * reported + 2 * hop)
    return {"config": config, "variant": variant, "sample_rate": rate, "hop": hop, "reported_delay": reported,
            "reported_delay_ms": 1000.0 * reported / rate, "lookahead_ms": args.get("lookahead_ms"),
            "causal": bool(args.get("causal", False)), "buffers": rows}


def measure_rave(causal: bool, seconds: float, binary: Optional[Path]) -> Dict[str, object]:
    """The official RAVE v2 (``causal``: with its causal.gin), untrained, at its hop of 2048."""
    exported = export_rave(ROOT / ".cache" / "bench_exports", reuse=False, causal=causal)
    variant = "causal" if causal else "default"
    rows = measure_pair(exported, 2048, 44100, None, seconds, binary, f"RAVE v2 {variant}", 65536)
    return {"config": f"official RAVE v2 ({exported['rave_version']})", "variant": variant, "sample_rate": 44100,
            "hop": 2048, "reported_delay": None, "causal": causal, "buffers": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=["demo", "small", "v2", "live"])
    parser.add_argument("--seconds", type=float, default=6.0, help="length of the click train")
    parser.add_argument("--no-rave", action="store_true", help="leave the official RAVE out")
    parser.add_argument("--no-nn-client", action="store_true", help="measure in this process only")
    args = parser.parse_args()
    torch.set_num_threads(1)
    binary = None
    if not args.no_nn_client:
        binary = nn_client.build_nn_client(nn_client.ensure_libtorch("2.5.1"))  # fetched once into .cache
    results = []
    with tempfile.TemporaryDirectory() as folder:
        for config in args.configs:
            causal_config = bool(load_model_args(ROOT / "configs" / f"{config}.yaml").get("causal", False))
            for variant in ("shipped",) if causal_config else ("shipped", "centred", "causal"):
                results.append(measure(config, variant, args.seconds, Path(folder), binary))
    if not args.no_rave:
        for causal in (False, True):
            results.append(measure_rave(causal, args.seconds, binary))
    settings = {"seconds": args.seconds, "buffers": list(BUFFERS), "threads": 1, "weights": "untrained (seed 0)",
                "runtime": f"torch {torch.__version__}" + ("" if binary is None else "; nn_client on libtorch 2.5.1")}
    path = write_results("latency", settings, results)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

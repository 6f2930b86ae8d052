"""Latency measured: when a streaming export's output comes out, at every nn~ buffer size.

    python -m benchmarks.bench_latency [--seconds 6] [--configs demo small v2]

For each shipped config, as shipped (small and v2: ``lookahead_ms: 100``), fully centred
(``lookahead_ms: null``) and with ``configs/causal.yaml``, this builds the streaming and the
offline TorchScript exports (untrained weights: timing does not depend on them), feeds a
click train with a little noise through the streaming export buffer by buffer (one
``forward`` call per buffer, as nn~ does; a fresh load per buffer size), and finds the lag at
which its output matches the offline export's one-call output (least squares over every
lag up to twice the reported delay plus a frame). That lag is the measured algorithmic
delay; a host that runs the model ``B`` samples at a time adds ``B`` (one buffer of input
waits before each call), so a player hears ``measured + B``.

Writes ``benchmarks/results/latency.json`` (machine, settings; per variant the reported
delay and, per buffer size, the measured one, its residual, the next best lag's residual
(how sharply the match stands out) and the total with the buffer).
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Dict, List

import torch

from benchmarks.bench_stream import load_model_args
from benchmarks.common import write_results

ROOT = Path(__file__).resolve().parents[1]
BUFFERS = (128, 256, 512, 1024, 2048)


def click_train(samples: int, sample_rate: int, period_s: float = 0.5) -> torch.Tensor:
    """``[1, 1, samples]``: unit clicks every ``period_s`` on noise at -40 dBFS."""
    generator = torch.Generator().manual_seed(0)
    x = 0.01 * torch.randn(1, 1, samples, generator=generator)
    x[..., :: int(period_s * sample_rate)] += 1.0
    return x


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


def variant_args(config: str, variant: str) -> Dict[str, object]:
    args = load_model_args(ROOT / "configs" / f"{config}.yaml")
    if variant == "centred":
        args["lookahead_ms"] = None
    elif variant == "causal":
        args["causal"] = True
    return args


def measure(config: str, variant: str, seconds: float, out_dir: Path) -> Dict[str, object]:
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
    samples = (int(seconds * rate) // 2048 + 1) * 2048
    audio = click_train(samples, rate)
    with torch.no_grad():
        reference = torch.jit.load(str(paths["offline"])).forward(audio)
    rows: List[Dict[str, object]] = []
    for buffer in [b for b in BUFFERS if b >= hop and b % hop == 0]:
        stream_module = torch.jit.load(str(paths["streaming"]))
        with torch.no_grad():
            stream = torch.cat([stream_module.forward(chunk) for chunk in audio.split(buffer, -1)], -1)
        found = measured_lag(stream, reference, 2 * reported + 2 * hop, settle=2 * hop)
        rows.append({"buffer": buffer, "measured_delay": found["lag"], "relative_error": found["relative_error"],
                     "next_best_error": found["next_best_error"],
                     "with_host_buffer": found["lag"] + buffer,
                     "with_host_buffer_ms": 1000.0 * (found["lag"] + buffer) / rate})
        print(f"{config:5s} {variant:8s} buffer {buffer:4d}: reported {reported} samples "
              f"({1000.0 * reported / rate:.1f} ms), measured {found['lag']} (residual {found['relative_error']:.1e}, "
              f"next best lag {found['next_best_error']:.1e}); "
              f"with the host buffer {found['lag'] + buffer} samples ({1000.0 * (found['lag'] + buffer) / rate:.1f} ms)")
    return {"config": config, "variant": variant, "sample_rate": rate, "hop": hop, "reported_delay": reported,
            "reported_delay_ms": 1000.0 * reported / rate, "lookahead_ms": args.get("lookahead_ms"),
            "causal": bool(args.get("causal", False)), "buffers": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=["demo", "small", "v2"])
    parser.add_argument("--seconds", type=float, default=6.0, help="length of the click train")
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = []
    with tempfile.TemporaryDirectory() as folder:
        for config in args.configs:
            for variant in ("shipped", "centred", "causal"):
                results.append(measure(config, variant, args.seconds, Path(folder)))
    path = write_results("latency", {"seconds": args.seconds, "buffers": list(BUFFERS), "threads": 1,
                                     "weights": "untrained (seed 0)", "runtime": f"torch {torch.__version__}"},
                         results)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

"""The official RAVE v2 (PyPI acids-rave==2.3.1) as a speed baseline: export it, time it.

Runs in RAVE's own venv (RAVE is CC BY-NC: it is installed and run for measurement only,
none of its code is in this repository). Set the venv up with
``bash benchmarks/setup_rave_venv.sh`` (``.cache/rave-venv``), then, from the repo root:

    .cache/rave-venv/bin/python -m benchmarks.bench_rave_baseline [--buffers 300]
    .cache/rave-venv/bin/python -m benchmarks.bench_rave_baseline --export-only DIR   # used by compare_rave
    .cache/rave-venv/bin/python -m benchmarks.bench_rave_baseline --export-only DIR --causal   # v2 + causal.gin

What is built: an untrained ``rave.RAVE()`` from RAVE's own ``v2.gin`` (what ``rave train
--config v2`` builds; speed does not depend on the weights), saved as a run folder
(``config.gin`` + a ``.ckpt``), then exported by RAVE's own export script,
``python -m scripts.export --run RUN [--streaming]`` -- the exact ``.ts`` files nn~ would
load (cached_conv streaming convolutions with ``--streaming``). With untrained weights the
export keeps 1 latent dimension (fidelity is 0) and its ``decode`` fills the other 127
with noise, so the decoder does the same work as for a trained model.

Timed as in :mod:`benchmarks.bench_stream`: ``forward`` per ``[1, 1, 2048]`` buffer on 1
thread (10 warm-up calls), and one offline ``forward`` (encode + decode) on ~10 s.
Writes ``benchmarks/results/rave_baseline.json``.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, Optional

import torch

from benchmarks.bench_stream import BUFFER, WARMUP, buffer_count, parameter_count, time_exports

RAVE_CONFIG = "v2"
NAME = "rave_v2"
REPO_ROOT = Path(__file__).resolve().parent.parent


def rave_version() -> str:
    from importlib.metadata import version

    return version("acids-rave")


def parse_rave_config(config: str, *overlays: str) -> None:
    """Parse one of RAVE's own gin configs by name (``"v2"``, ``"v2_small"`` ...), then ``overlays``
    (``"causal"`` ...), into a clear gin state, as ``rave train --config v2 --config causal`` does."""
    import gin
    import rave  # noqa: F401  registers RAVE's config folder as a gin search path

    gin.clear_config()
    # gin also looks includes up as Python packages ("configs/v1.gin" -> package ``configs``), and
    # this repository's own configs/ folder, importable from the repo root, would crash that look-up
    saved = list(sys.path)
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != REPO_ROOT]
    importlib.invalidate_caches()
    try:
        for name in (config, *overlays):
            gin.parse_config_file(f"{name}.gin")
    finally:
        sys.path[:] = saved


def export_run(run: Path, output: Path, name: str, streaming: bool, env: Optional[Dict[str, str]] = None) -> Path:
    """Export a RAVE run folder with RAVE's own ``python -m scripts.export``; returns ``output/name[_streaming].ts``."""
    command = [sys.executable, "-m", "scripts.export", "--run", str(run.resolve()), "--output", str(output.resolve()),
               "--name", name] + (["--streaming"] if streaming else [])
    with tempfile.TemporaryDirectory() as tmp:
        # cwd = tmp: this repository's own scripts/ folder must not shadow RAVE's ``scripts`` package
        done = subprocess.run(command, cwd=tmp, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        sys.stderr.write(done.stdout + done.stderr)
        raise SystemExit(f"RAVE's export failed: {' '.join(command)}")
    return output / f"{name}{'_streaming' if streaming else ''}.ts"


def make_run(run: Path, seed: int = 0, causal: bool = False) -> None:
    """An untrained RAVE v2 run folder as RAVE's training leaves it: ``config.gin`` and a checkpoint."""
    import rave

    overlays = ("causal",) if causal else ()
    parse_rave_config(RAVE_CONFIG, *overlays)
    torch.manual_seed(seed)
    model = rave.RAVE()
    ckpt_dir = run / "version_0" / "checkpoints"
    ckpt_dir.mkdir(parents=True)
    torch.save({"state_dict": model.state_dict()}, ckpt_dir / "untrained.ckpt")
    (run / "config.gin").write_text("".join(f'include "configs/{name}.gin"\n' for name in (RAVE_CONFIG, *overlays)))


def export_rave(out_dir: Path, causal: bool = False) -> Dict[str, Path]:
    """Export the untrained v2 run (``causal``: with RAVE's ``causal.gin``) with RAVE's own
    ``scripts/export.py``, streaming and offline."""
    out_dir = out_dir.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    name = NAME + ("_causal" if causal else "")
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        make_run(run, causal=causal)
        return {"streaming": export_run(run, out_dir, name, streaming=True),
                "offline": export_run(run, out_dir, name, streaming=False)}


def describe_export(module: torch.nn.Module) -> Dict[str, object]:
    info: Dict[str, object] = {"parameters": parameter_count(module), "buffer_elements": buffer_count(module)}
    for attr in ("latent_size", "full_latent_size"):
        if hasattr(module, attr):
            info[attr] = int(getattr(module, attr))
    if hasattr(module, "forward_params"):
        info["forward_params"] = [int(v) for v in module.forward_params]
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--buffers", type=int, default=300)
    parser.add_argument("--offline-calls", type=int, default=3)
    parser.add_argument("--export-only", type=Path, default=None, metavar="DIR",
                        help="only export to DIR and print the paths as JSON")
    parser.add_argument("--causal", action="store_true", help="with --export-only: v2 with RAVE's causal.gin")
    args = parser.parse_args()
    torch.set_num_threads(1)

    if args.export_only is not None:
        paths = export_rave(args.export_only, causal=args.causal)
        print(json.dumps({"rave_version": rave_version(), **{k: str(p) for k, p in paths.items()}}))
        return

    from benchmarks.common import write_results

    with tempfile.TemporaryDirectory() as tmp:
        streaming, results = time_exports(export_rave(Path(tmp)), args.buffers, args.offline_calls)
    results.update(describe_export(streaming))
    stream, off, files = results["streaming"], results["offline"], results["files"]
    settings = {"rave": f"acids-rave=={rave_version()}", "config": f"{RAVE_CONFIG}.gin", "buffer": BUFFER,
                "warmup": WARMUP, "threads": 1, "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
                "timed": "scripted streaming export (RAVE's scripts/export.py --streaming): forward per buffer; "
                         "offline export: one forward (encode+decode)"}
    path = write_results("rave_baseline", settings, results)
    print(f"RAVE v2 streaming forward @ {BUFFER}: median {stream['median_ms']:.2f} ms, p99 {stream['p99_ms']:.2f} ms,"
          f" RTF {stream['rtf']:.2f}; offline RTF {off['rtf']:.1f}; file {files['streaming']['size_mb']} MB; "
          f"{results['parameters']:,} parameters -> {path}")


if __name__ == "__main__":
    main()

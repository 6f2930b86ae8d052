"""Build and run ``nn_client``: checks an exported ``.ts`` model the way nn~ 1.6.0 drives it.

``tools/nn_client/`` holds the C++ client (see its README for the contract it checks and
its exit codes). This module compiles it against a libtorch, caches the binary, and runs
it::

    from nn_client import build_nn_client, run_nn_client, ensure_libtorch
    res = run_nn_client("model.ts", "--strict", "--threads", "1")   # torch of this Python
    res = run_nn_client("model.ts", "--strict", torch_dir=ensure_libtorch("2.5.1"))  # nn~'s

Binaries go to ``<repo>/.cache/nn_client/<libtorch version>/nn_client`` (git-ignored),
and are rebuilt only when ``nn_client.cpp`` / ``build.sh`` are newer or the libtorch folder
changed. The build takes about a minute on 2 cores (g++ -O2, one file). A file lock and
an atomic rename make concurrent builds (two pytest processes) safe.

``ensure_libtorch("2.5.1")`` fetches the libtorch inside the nn~ 1.6.0 release binaries:
it downloads the PyPI ``torch==2.5.1`` wheel (the CUDA 12.4 build, ~906 MB: there is no
CPU-only 2.5.1 wheel on PyPI) and the two small CUDA runtime wheels its ``libtorch_cpu.so``
links against, checks their sha256, and extracts only the headers, CMake files and CPU
libraries (~500 MB) into ``<repo>/.cache/libtorch-2.5.1/``; the wheels are then deleted.
About 30 s of download and 5 s of extraction here. Linux x86_64 only.

Set ``RAVE_DDSP_CACHE_DIR`` to put the cache somewhere else.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Union

REPO_ROOT = Path(__file__).resolve().parents[2]
TOOL_DIR = REPO_ROOT / "tools" / "nn_client"

#: Exit codes of nn_client (tools/nn_client/README.md).
EXIT_PASS, EXIT_FAIL, EXIT_USAGE, EXIT_STRICT_WARNINGS = 0, 1, 2, 3

#: Start of the warning nn_client prints when a buffer took longer than realtime. It says
#: more about the (shared, 2-core) machine than about the model; see ``NnClientReport``.
TIMING_WARNING = "steady-state buffers took longer than the buffer period"

PathLike = Union[str, "os.PathLike[str]"]


class NnClientError(RuntimeError):
    """nn_client or its libtorch could not be built or fetched."""


def cache_dir() -> Path:
    """Root of the build cache: ``$RAVE_DDSP_CACHE_DIR`` or ``<repo>/.cache``."""
    return Path(os.environ.get("RAVE_DDSP_CACHE_DIR") or REPO_ROOT / ".cache")


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Exclusive advisory lock on ``path`` (held across processes until the block ends)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# --------------------------------------------------------------------------------------
# libtorch location and version
# --------------------------------------------------------------------------------------
def python_torch_dir() -> Path:
    """The folder of the ``torch`` package imported by this Python (has include/, lib/)."""
    import torch

    return Path(torch.__file__).resolve().parent


def libtorch_version(torch_dir: PathLike) -> str:
    """``MAJOR.MINOR.PATCH`` of the libtorch in ``torch_dir``, read from its headers."""
    d = Path(torch_dir)
    for rel in ("include/torch/headeronly/version.h",            # torch >= 2.9
                "include/torch/csrc/api/include/torch/version.h"):
        p = d / rel
        if p.is_file():
            text = p.read_text(errors="replace")
            parts = [re.search(rf"#define TORCH_VERSION_{k}\s+(\d+)", text) for k in ("MAJOR", "MINOR", "PATCH")]
            if all(parts):
                return ".".join(m.group(1) for m in parts)  # type: ignore[union-attr]
    bv = d / "build-version"                                    # unzipped libtorch
    if bv.is_file():
        return bv.read_text().strip().split("+")[0]
    raise NnClientError(f"cannot tell the libtorch version of {d} (no torch/version.h)")


# --------------------------------------------------------------------------------------
# building
# --------------------------------------------------------------------------------------
def _newest_source_mtime() -> float:
    return max((TOOL_DIR / n).stat().st_mtime for n in ("nn_client.cpp", "build.sh"))


def _is_current(binary: Path, info_path: Path, torch_dir: Path) -> bool:
    if not binary.is_file() or not info_path.is_file():
        return False
    try:
        info = json.loads(info_path.read_text())
    except ValueError:
        return False
    return (info.get("torch_dir") == str(torch_dir)
            and binary.stat().st_mtime >= _newest_source_mtime()
            and (torch_dir / "lib").is_dir())


def build_nn_client(torch_dir: Optional[PathLike] = None, *, with_cuda: bool = False,
                    force: bool = False, quiet: bool = True) -> Path:
    """Compile ``tools/nn_client`` against a libtorch and return the binary's path.

    ``torch_dir``: a folder with ``include/`` and ``lib/`` (an unzipped libtorch, or a torch
    Python package such as ``ensure_libtorch("2.5.1")``); default: this Python's torch.
    ``with_cuda``: also link ``libtorch_cuda`` (needed only for ``--gpu``). Off by default:
    it needs the CUDA libraries to load, and nothing here has a GPU.
    The binary is cached in ``.cache/nn_client/<version>/`` and rebuilt only when the
    sources are newer or ``torch_dir`` changed. Raises ``NnClientError`` when g++ fails.
    """
    tdir = Path(torch_dir).resolve() if torch_dir is not None else python_torch_dir()
    version = libtorch_version(tdir)
    out_dir = cache_dir() / "nn_client" / (version + ("-cuda" if with_cuda else ""))
    binary = out_dir / "nn_client"
    info_path = out_dir / "build-info.json"
    if not force and _is_current(binary, info_path, tdir):
        return binary
    with _file_lock(out_dir / ".lock"):
        if not force and _is_current(binary, info_path, tdir):   # built by another process
            return binary
        tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=out_dir))
        try:
            env = dict(os.environ, TORCH_DIR=str(tdir), BUILD_DIR=str(tmp),
                       WITH_CUDA="1" if with_cuda else "0")
            t0 = time.monotonic()
            proc = subprocess.run(["bash", str(TOOL_DIR / "build.sh")], env=env, cwd=str(TOOL_DIR),
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            seconds = time.monotonic() - t0
            if proc.returncode != 0 or not (tmp / "nn_client").is_file():
                raise NnClientError(f"building nn_client against {tdir} failed "
                                    f"(exit {proc.returncode}):\n{proc.stdout[-6000:]}")
            os.replace(tmp / "nn_client", binary)            # atomic: readers never see half a file
            info = {"torch_dir": str(tdir), "version": version, "with_cuda": with_cuda,
                    "build_seconds": round(seconds, 1), "built": time.strftime("%Y-%m-%d %H:%M:%S")}
            info_path.write_text(json.dumps(info, indent=1) + "\n")
            if not quiet:
                print(f"built {binary} against libtorch {version} in {seconds:.0f} s", file=sys.stderr)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return binary


def run_nn_client(model_path: PathLike, *args: str, torch_dir: Optional[PathLike] = None,
                  timeout: float = 600, binary: Optional[PathLike] = None,
                  ) -> "subprocess.CompletedProcess[str]":
    """Run nn_client on ``model_path`` with ``args``; return the finished process.

    ``returncode`` is 0 (pass), 1 (contract violation, or the file does not load), 2 (usage
    or file error) or 3 (warnings only, with ``--strict``). ``stdout`` holds the report
    (stderr is merged into it). ``binary`` skips the build (e.g. a session fixture's path).
    Tip: pass ``"--threads", "1"`` on busy machines (README caveats), and use
    ``parse_report(res.stdout)`` to tell timing warnings from contract warnings.
    """
    exe = Path(binary) if binary is not None else build_nn_client(torch_dir)
    return subprocess.run([str(exe), str(model_path), *map(str, args)], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=timeout)


@dataclass
class NnClientReport:
    """What an nn_client run printed, split into its verdict lines."""

    verdict: str                       # "PASS", "FAIL", or "" when no RESULT line was printed
    failures: List[str] = field(default_factory=list)   # text of each "[FAIL]" line
    warnings: List[str] = field(default_factory=list)   # text of each "[WARN]" line

    @property
    def contract_warnings(self) -> List[str]:
        """Warnings other than "too slow for realtime on this machine"."""
        return [w for w in self.warnings if TIMING_WARNING not in w]

    @property
    def ok(self) -> bool:
        """No violation, and no warning except timing ones (which depend on machine load)."""
        return not self.failures and not self.contract_warnings and self.verdict != ""


def parse_report(output: str) -> NnClientReport:
    """Parse nn_client's stdout into an ``NnClientReport``."""
    fails = [ln.split("[FAIL]", 1)[1].strip() for ln in output.splitlines() if "[FAIL]" in ln]
    warns = [ln.split("[WARN]", 1)[1].strip() for ln in output.splitlines() if "[WARN]" in ln]
    m = re.findall(r"^RESULT: (PASS|FAIL)", output, flags=re.M)
    return NnClientReport(verdict=m[-1] if m else "", failures=fails, warnings=warns)


# --------------------------------------------------------------------------------------
# libtorch 2.5.1 (the runtime of the nn~ 1.6.0 release binaries)
# --------------------------------------------------------------------------------------
#: Pinned wheels per libtorch version: (requirement, sha256). PyPI's Linux x86_64 torch
#: wheel is the CUDA build; its libtorch_cpu.so needs libcudart.so.12 and libcupti.so.12.
_WHEELS = {
    "2.5.1": [
        ("torch==2.5.1", "de5b7d6740c4b636ef4db92be922f0edc425b65ed78c5076c43c42d362a45457"),
        ("nvidia-cuda-runtime-cu12==12.4.127", "64403288fa2136ee8e467cdc9c9427e0434110899d07c779f25b5c068934faa5"),
        ("nvidia-cuda-cupti-cu12==12.4.127", "9dec60f5ac126f7bb551c055072b69d85392b13311fcc1bcda2202d172df30fb"),
    ],
}
#: Wheel members needed to compile and run nn_client (CPU only). The layout is kept, so
#: libtorch_cpu.so's RPATH ($ORIGIN/../../nvidia/<pkg>/lib) finds the CUDA runtime.
_MEMBERS = re.compile(r"^(torch/include/.*|torch/share/cmake/.*"
                      r"|torch/lib/(libtorch_cpu\.so|libtorch\.so|libc10\.so|libgomp[-.].*\.so[.0-9]*)"
                      r"|nvidia/cuda_runtime/lib/libcudart\.so\.12|nvidia/cuda_cupti/lib/libcupti\.so\.12)$")


def ensure_libtorch(version: str = "2.5.1", *, quiet: bool = True) -> Path:
    """Fetch (once) the libtorch ``version`` and return its torch folder, for ``torch_dir``.

    Downloads the pinned wheels with ``pip download`` (hash-checked), extracts only what
    nn_client needs into ``.cache/libtorch-<version>/`` and deletes the wheels. Idempotent
    and safe to call from several processes. Needs network access to PyPI the first time.
    """
    if version not in _WHEELS:
        raise NnClientError(f"no pinned wheels for libtorch {version} (have: {', '.join(_WHEELS)})")
    if sys.platform != "linux" or platform.machine() != "x86_64":
        raise NnClientError("fetching libtorch from PyPI wheels is only set up for Linux x86_64")
    root = cache_dir() / f"libtorch-{version}"
    torch_dir = root / "torch"
    stamp = root / ".complete"
    if stamp.is_file():
        return torch_dir
    root.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(root.parent / f".libtorch-{version}.lock"):
        if stamp.is_file():
            return torch_dir
        work = Path(tempfile.mkdtemp(prefix=f".libtorch-{version}-", dir=root.parent))
        try:
            req = work / "requirements.txt"
            req.write_text("".join(f"{r} --hash=sha256:{h}\n" for r, h in _WHEELS[version]))
            dl = work / "wheels"
            t0 = time.monotonic()
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                   "--require-hashes", "--no-cache-dir", "--python-version", "3.11",
                   "--platform", "manylinux1_x86_64", "--platform", "manylinux2014_x86_64",
                   "-r", str(req), "-d", str(dl)]
            proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            if proc.returncode != 0:
                raise NnClientError(f"pip download of libtorch {version} wheels failed:\n{proc.stdout[-4000:]}")
            t1 = time.monotonic()
            tree = work / "tree"
            for whl in sorted(dl.glob("*.whl")):
                with zipfile.ZipFile(whl) as z:
                    for name in z.namelist():
                        if _MEMBERS.match(name):
                            z.extract(name, tree)
            if not (tree / "torch" / "lib" / "libtorch_cpu.so").is_file():
                raise NnClientError(f"the torch {version} wheel had no torch/lib/libtorch_cpu.so")
            shutil.rmtree(dl)
            if root.exists():                      # a half-finished earlier attempt
                shutil.rmtree(root)
            os.replace(tree, root)
            (root / "fetch-info.json").write_text(json.dumps({
                "wheels": [r for r, _ in _WHEELS[version]],
                "download_seconds": round(t1 - t0, 1),
                "extract_seconds": round(time.monotonic() - t1, 1)}, indent=1) + "\n")
            stamp.write_text("ok\n")
            if not quiet:
                print(f"libtorch {version}: downloaded in {t1 - t0:.0f} s, extracted in "
                      f"{time.monotonic() - t1:.0f} s to {root}", file=sys.stderr)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return torch_dir


def check_models(models: Sequence[PathLike], torch_dir: Optional[PathLike] = None,
                 extra_args: Sequence[str] = ("--strict", "--threads", "1"),
                 strict_timing: bool = False, timeout: float = 600) -> List[tuple]:
    """Run nn_client on each model; return ``[(path, passed, report, completed_process)]``.

    A run counts as passed when nn_client exits 0, or (unless ``strict_timing``) when it
    exits 3 and its only warnings are timing ones.
    """
    exe = build_nn_client(torch_dir)
    results = []
    for m in models:
        res = run_nn_client(m, *extra_args, binary=exe, timeout=timeout)
        rep = parse_report(res.stdout)
        passed = res.returncode == EXIT_PASS or (
            not strict_timing and res.returncode == EXIT_STRICT_WARNINGS and rep.ok)
        results.append((Path(m), passed, rep, res))
    return results


# --------------------------------------------------------------------------------------
# tiny example models (tests and the check script's --self-test)
# --------------------------------------------------------------------------------------
def write_example_models(out_dir: PathLike) -> dict:
    """Script and save three tiny models with the running torch; return ``{name: path}``.

    ``valid``: follows the nn~ contract (forward / encode / decode with ``*_params``,
    labels, ``get_methods``, a float attribute ``gain`` with ``get_``/``set_``, int ``sr``);
    nn_client must pass it. ``broken``: declares 2 output channels and returns 1, and a
    method returning float64; nn_client must fail it (exit 1). ``uses_torch_stft``: valid,
    but calls ``torch.stft``, whose TorchScript wrapper saved by torch >= 2.7 passes
    ``align_to_window`` to ``aten::stft``; libtorch 2.5.1 refuses to load it. It is the
    canary that proves a client really runs an older libtorch.
    """
    from typing import List, Tuple

    import torch
    import torch.nn as nn

    class Valid(nn.Module):
        def __init__(self, hop: int = 16):
            super().__init__()
            self.sr = 44100
            self.hop = hop
            self.gain = (1.0,)
            self.register_buffer("forward_params", torch.tensor([1, 1, 1, 1]))
            self.register_buffer("encode_params", torch.tensor([1, 1, 2, hop]))
            self.register_buffer("decode_params", torch.tensor([2, hop, 1, 1]))
            self.register_buffer("gain_params", torch.tensor([2]))     # 2 = float
            self.forward_input_labels = ["(signal) audio in"]
            self.forward_output_labels = ["(signal) audio out"]
            self.encode_input_labels = ["(signal) audio in"]
            self.encode_output_labels = ["(signal) frame mean", "(signal) frame rms"]
            self.decode_input_labels = ["(signal) mean", "(signal) rms"]
            self.decode_output_labels = ["(signal) audio out"]

        @torch.jit.export
        def get_methods(self) -> List[str]:
            return ["forward", "encode", "decode"]

        @torch.jit.export
        def get_attributes(self) -> List[str]:
            return ["gain"]

        @torch.jit.export
        def get_gain(self) -> Tuple[float]:
            return self.gain

        @torch.jit.export
        def set_gain(self, gain: float) -> int:
            self.gain = (gain,)
            return 0

        @torch.jit.export
        def encode(self, x: torch.Tensor) -> torch.Tensor:
            frames = x.reshape(x.shape[0], 1, -1, self.hop)          # reshape: input is strided
            return torch.cat([frames.mean(-1), frames.pow(2).mean(-1).sqrt()], 1)

        @torch.jit.export
        def decode(self, z: torch.Tensor) -> torch.Tensor:
            y = torch.tanh(z[:, 0:1] + z[:, 1:2]) * self.gain[0]
            return y.repeat_interleave(self.hop, -1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.tanh(x * self.gain[0])

    class Broken(nn.Module):
        def __init__(self):
            super().__init__()
            self.sr = 44100
            self.register_buffer("forward_params", torch.tensor([1, 1, 2, 1]))   # says 2 out channels
            self.register_buffer("as_double_params", torch.tensor([1, 1, 1, 1]))

        @torch.jit.export
        def get_methods(self) -> List[str]:
            return ["forward", "as_double"]

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x                                                      # returns 1

        @torch.jit.export
        def as_double(self, x: torch.Tensor) -> torch.Tensor:
            return x.double()                                             # nn~ reads float32

    class UsesTorchStft(nn.Module):
        def __init__(self, n_fft: int = 256):
            super().__init__()
            self.sr = 44100
            self.n_fft = n_fft
            self.register_buffer("forward_params", torch.tensor([1, 1, 1, 1]))
            self.register_buffer("window", torch.hann_window(n_fft))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            b, c, t = x.shape
            s = torch.stft(x.reshape(b * c, t), self.n_fft, self.n_fft // 4, self.n_fft, self.window,
                           center=True, return_complex=True)
            y = torch.istft(s, self.n_fft, self.n_fft // 4, self.n_fft, self.window, center=True, length=t)
            return y.reshape(b, c, t)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    import warnings
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")                 # "torch.jit.script is deprecated" (2.14)
        for name, cls in (("valid", Valid), ("broken", Broken), ("uses_torch_stft", UsesTorchStft)):
            p = out / f"{name}.ts"
            torch.jit.script(cls().eval()).save(str(p))
            paths[name] = p
    return paths

"""Folders of files through a model: the jobs of scripts/encode.py, decode.py and reconstruct.py.

Each job takes files or folders (searched recursively), writes one output per input under
``output`` at the input's relative name with a new suffix, and returns a :class:`FileRun`
(written, skipped with reasons). Every output is written to a temporary file and renamed
into place, so an interrupted run leaves no half-written file. Inputs are loaded and run
together (:class:`rave_ddsp.runtime.codec.Codec`) about ``batch_seconds`` of audio at a time.

A latent file ``x.npy`` holds float32 ``[Z, L]`` PCA coordinates; its sidecar ``x.json``
(:func:`latent_info`) records the model, its rates and the audio's original length, which
decoding uses to crop its output. A code file (a discrete model's, ``encode --codes``) holds
integers ``[n, L]``, the codes of the first ``n`` codebooks, in the smallest unsigned type that
holds the codebook (uint16 for 1024 entries); its sidecar adds the bitrate and the codebooks'
fingerprint, which decoding checks.
"""
import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import soundfile
import torch
from torch import Tensor
from tqdm import tqdm

from rave_ddsp.data.audio import find_audio_files, load_audio, probe_audio
from rave_ddsp.runtime.codec import BATCH_SECONDS, Codec
from rave_ddsp.errors import UnusableFile, UserError
from rave_ddsp.files import atomic_path, save_figure, write_json
from rave_ddsp.runtime.inference import PRECISIONS, AutoEncoder

AUDIO_FORMATS = {"wav": ("WAV", "FLOAT"), "flac": ("FLAC", "PCM_24")}
"""Output format -> (soundfile format, subtype). WAV keeps float32 samples (no clipping); FLAC is
24-bit, clipped to [-1, 1]."""
PathLike = Union[str, Path]
NPY_MAGIC = b"\x93NUMPY"
LATENT_LIMIT = 1000.0
"""Decoding refuses latents beyond this magnitude. Encoded latents are PCA coordinates of
roughly unit scale (the prior is a standard normal); values near 1e3 and up are not a place
in the latent space but a bug upstream, and the decoder turns them into audio peaks of the
same order."""


@dataclass
class FileRun:
    """What a job did: outputs written and inputs skipped, as ``(name, reason)``."""

    action: str
    output: Path
    written: List[Path] = field(default_factory=list)
    skipped: List[Tuple[str, str]] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"{self.action}: {len(self.written)} file(s) written into {self.output}",
                 f"skipped: {len(self.skipped)}"]
        return "\n".join(lines + [f"  {name}: {reason}" for name, reason in self.skipped])


def add_model_options(parser: argparse.ArgumentParser, output_help: str) -> None:
    """The options encode.py, decode.py and reconstruct.py share: model, output, device, precision, windows,
    quiet."""
    from rave_ddsp.runtime.codec import BATCH_SECONDS

    parser.add_argument("--model", required=True, help="run folder, checkpoint or non-streaming .ts export")
    parser.add_argument("--output", required=True, help=output_help)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    add_precision_option(parser)
    parser.add_argument("--batch-seconds", type=float, default=BATCH_SECONDS,
                        help="audio per forward pass; longer signals go in overlapping windows (bounds memory)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def add_precision_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--precision", default="32", choices=PRECISIONS,
                        help="32: float32 (default); bf16: the convolutions in bfloat16, 1.2-1.9x faster on CPUs with "
                             "AVX512-BF16 or AMX (refused on x86 CPUs without; run folders and checkpoints only)")


def parse_device(name: str) -> torch.device:
    """``--device`` as a torch device, checked to exist on this machine."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device {name}: expected cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: this machine (or this torch build) has no CUDA device")
    return device


def write_audio(path: Path, audio: Tensor, sample_rate: int, audio_format: str) -> None:
    """Write ``[C, T]`` atomically in ``audio_format`` (a key of :data:`AUDIO_FORMATS`)."""
    container, subtype = AUDIO_FORMATS[audio_format]
    data = audio.detach().cpu().numpy().T  # [T, C]
    if subtype.startswith("PCM"):
        data = np.clip(data, -1.0, 1.0)
    with atomic_path(path) as temporary:
        soundfile.write(str(temporary), data, sample_rate, format=container, subtype=subtype)


def plan_outputs(files: Sequence[Tuple[Path, str]], output: Path, suffix: str,
                 skipped: List[Tuple[str, str]]) -> List[Tuple[Path, str, Path]]:
    """``(path, name, output / name with suffix)``; name clashes and self-overwrites go to ``skipped``."""
    if output.exists() and not output.is_dir():
        raise UserError(f"{output}: is a file; expected a folder for the outputs")
    taken: Dict[Path, str] = {}
    planned = []
    for path, name in files:
        target = output / Path(name).with_suffix(suffix)
        if target in taken:
            skipped.append((name, f"same output name {target.name} as {taken[target]}"))
        elif target.resolve() == path.resolve():
            skipped.append((name, "its output would overwrite it; choose another --output"))
        else:
            taken[target] = name
            planned.append((path, name, target))
    return planned


def run_files(planned: Sequence[Tuple[Path, str, Path]], load: Callable[[Path], Tuple[Tensor, dict]],
              process: Callable[[List[Tensor]], List[Tensor]], write: Callable[[Path, Tensor, dict], None],
              budget: int, run: FileRun, progress: bool) -> FileRun:
    """Load inputs until their lengths (last axis) reach ``budget``, process them together, write each.

    ``load(path) -> (input, info)`` may raise :class:`UnusableFile` or :class:`UnusableFile`:
    the file is skipped with the reason. ``write(target, output, info)`` writes one result;
    ``info`` gains the input's ``name`` and ``source`` path. Raises :class:`UserError` when
    nothing could be written.
    """
    pending: List[Tuple[Path, Tensor, dict]] = []

    def flush() -> None:
        for (target, _, info), result in zip(pending, process([x for _, x, _ in pending])):
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                write(target, result, info)
            except OSError as error:
                raise UserError(f"{target}: cannot write ({error})") from None
            run.written.append(target)
        pending.clear()

    for path, name, target in tqdm(planned, desc=run.action, unit="file", disable=not progress):
        try:
            x, info = load(path)
        except UnusableFile as error:
            run.skipped.append((name, error.reason))
            continue
        pending.append((target, x, {**info, "name": name, "source": str(path)}))
        if sum(item[1].shape[-1] for item in pending) >= budget:
            flush()
    flush()
    if not run.written:
        reasons = "; ".join(f"{name}: {reason}" for name, reason in run.skipped) or "no input files found"
        raise UserError(f"nothing to {run.action}: {reasons}")
    return run


def load_model_audio(path: Path, model: AutoEncoder) -> Tuple[Tensor, dict]:
    """A file at the model's rate and channels ``[C, T]``, and its own sample rate."""
    _, rate = probe_audio(path, model.channels)
    audio = torch.from_numpy(load_audio(path, model.sample_rate, model.channels))  # [C, T]
    return audio, {"source_sample_rate": rate}


def latent_info(model: AutoEncoder, latent: Tensor, info: dict) -> dict:
    """The sidecar of a latent ``[Z, L]`` encoded from ``info``'s audio (:func:`run_files` info)."""
    return {
        "source": info["source"], "model": str(model.source),
        "latent": "PCA coordinates (rows: principal dimensions, largest variance first), float32 [Z, L]",
        "pca": True, "latent_size": model.latent_size, "frames": int(latent.shape[-1]),
        "sample_rate": model.sample_rate, "hop_length": model.hop_length, "frame_rate": model.frame_rate,
        "channels": model.channels, "length": info["length"],
        "source_sample_rate": info["source_sample_rate"],
    }


def code_info(model: AutoEncoder, codes: Tensor, info: dict) -> dict:
    """The sidecar of codes ``[n, L]`` encoded from ``info``'s audio."""
    return {
        "source": info["source"], "model": str(model.source),
        "codes": f"codes of the first {codes.shape[0]} codebooks (rows), one per latent frame (columns)",
        "codebooks": int(codes.shape[0]), "model_codebooks": model.n_codebooks,
        "codebook_size": model.codebook_size, "fingerprint": model.fingerprint,
        "bitrate_bps": model.bitrate * codes.shape[0] / model.n_codebooks, "frames": int(codes.shape[-1]),
        "sample_rate": model.sample_rate, "hop_length": model.hop_length, "frame_rate": model.frame_rate,
        "channels": model.channels, "length": info["length"], "source_sample_rate": info["source_sample_rate"],
    }


def check_codebooks(model: AutoEncoder, codebooks: Optional[int]) -> int:
    """``--codebooks``: the number asked for (default all), checked against the model."""
    model.require_codes()
    if codebooks is None:
        return model.n_codebooks
    if not 1 <= codebooks <= model.n_codebooks:
        raise UserError(f"--codebooks {codebooks}: the model has {model.n_codebooks} codebooks "
                        f"(1..{model.n_codebooks})")
    return codebooks


def encode_files(inputs: Sequence[PathLike], model: AutoEncoder, output: PathLike,
                 batch_seconds: float = BATCH_SECONDS, progress: bool = True, codes: bool = False,
                 codebooks: Optional[int] = None) -> FileRun:
    """Audio files -> ``output/<name>.npy`` latents ``[Z, L]`` float32 and ``<name>.json`` sidecars;
    with ``codes`` (discrete models), integer codes ``[codebooks, L]`` instead."""
    if codes:
        codebooks = check_codebooks(model, codebooks)
    elif codebooks is not None:
        raise UserError("--codebooks needs --codes (a continuous latent has no codebooks)")
    codec, output = Codec(model, batch_seconds), Path(output)
    files, skipped = find_audio_files(inputs)
    run = FileRun("encode", output, skipped=skipped)
    planned = plan_outputs(files, output, ".npy", run.skipped)

    def load(path: Path) -> Tuple[Tensor, dict]:
        audio, info = load_model_audio(path, model)
        return audio, {**info, "length": audio.shape[-1]}

    def write(target: Path, latent: Tensor, info: dict) -> None:
        if codes:
            latent = latent[:codebooks]
            array = latent.numpy().astype(np.min_scalar_type(model.codebook_size - 1))
            sidecar = code_info(model, latent, info)
        else:
            array, sidecar = latent.numpy().astype(np.float32), latent_info(model, latent, info)
        write_json(target.with_suffix(".json"), sidecar)  # first: no .npy without it
        with atomic_path(target) as temporary, open(temporary, "wb") as handle:
            np.save(handle, array)

    process = codec.encode_codes if codes else codec.encode
    return run_files(planned, load, process, write, codec.window * model.hop_length, run, progress)


def find_latent_files(inputs: Sequence[PathLike]) -> List[Tuple[Path, str]]:
    """``.npy`` files in ``inputs`` (folders searched recursively), with names relative to their folder."""
    files = []
    for given in map(Path, inputs):
        if given.is_dir():
            files += sorted((p, p.relative_to(given).as_posix()) for p in given.rglob("*.npy") if p.is_file())
        elif given.is_file():
            files.append((given, given.name))
        else:
            raise UserError(f"{given}: no such file or folder")
    return files


def check_latent(path: Path, model: AutoEncoder) -> Optional[str]:
    """Why ``path`` cannot be decoded (None if it can). Latents of a wrong size, and codes of
    another model (or given to a continuous one), raise :class:`UserError`."""
    latent_size = model.latent_size
    try:
        with open(path, "rb") as handle:
            magic = handle.read(len(NPY_MAGIC))
    except OSError as error:
        return f"cannot read this file ({error.strerror})"
    if magic != NPY_MAGIC:
        return "not a .npy array file (scripts/encode.py writes latents as .npy)"
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as error:
        return f"a damaged .npy array file ({error})"
    if array.ndim == 2 and array.shape[1] and np.issubdtype(array.dtype, np.integer):
        return check_codes(path, array, model)
    if array.ndim != 2 or array.shape[1] == 0 or not np.issubdtype(array.dtype, np.floating):
        return f"expected a float array [Z, L] (or integer codes [n, L]), got {array.dtype} {list(array.shape)}"
    if array.shape[0] != latent_size:
        raise UserError(f"{path}: latent size {array.shape[0]}, but the model decodes {latent_size} "
                        "latent dimensions (encoded with another model?)")
    return None


def check_codes(path: Path, array: np.ndarray, model: AutoEncoder) -> Optional[str]:
    """Why integer codes ``[n, L]`` cannot be decoded by ``model`` (see :func:`check_latent`)."""
    if not model.n_codebooks:
        raise UserError(f"{path}: integer codes, but {model.source} is a continuous model (bottleneck vae); "
                        "decode codes with the discrete model that wrote them")
    sidecar = path.with_suffix(".json")
    if sidecar.is_file():
        try:
            fingerprint = json.loads(sidecar.read_text()).get("fingerprint")
        except ValueError as error:
            return f"its sidecar {sidecar.name} is not a code description ({error})"
        if fingerprint and fingerprint != model.fingerprint:
            raise UserError(f"{path}: encoded by another model (codebook fingerprint {fingerprint}; "
                            f"{model.source} has {model.fingerprint}): its codes would decode to something else")
    if array.shape[0] > model.n_codebooks:
        raise UserError(f"{path}: codes of {array.shape[0]} codebooks, but {model.source} has {model.n_codebooks}")
    low, high = int(array.min()), int(array.max())
    if low < 0 or high >= model.codebook_size:
        return f"codes {low}..{high} outside the codebooks' 0..{model.codebook_size - 1} (damaged, or another model's)"
    return None


def decode_files(inputs: Sequence[PathLike], model: AutoEncoder, output: PathLike, audio_format: str = "wav",
                 batch_seconds: float = BATCH_SECONDS, progress: bool = True,
                 codebooks: Optional[int] = None) -> FileRun:
    """``.npy`` latents ``[Z, L]`` or integer codes ``[n, L]`` -> audio at the model's rate, cropped
    to the length in a sidecar. Codes decode with their first ``codebooks`` rows (default: all).

    Every file is checked first: a wrong latent size, or codes of another model, stop the job
    before anything is written.
    """
    if codebooks is not None:
        check_codebooks(model, codebooks)
    codec, output = Codec(model, batch_seconds), Path(output)
    run = FileRun("decode", output)
    usable = []
    for path, name in find_latent_files(inputs):
        reason = check_latent(path, model)
        if reason:
            run.skipped.append((name, reason))
        else:
            usable.append((path, name))
    planned = plan_outputs(usable, output, f".{audio_format}", run.skipped)

    def load(path: Path) -> Tuple[Tensor, dict]:
        array = np.load(path)
        if np.issubdtype(array.dtype, np.integer):
            if codebooks is not None and codebooks > array.shape[0]:
                raise UnusableFile(path, f"holds the codes of {array.shape[0]} codebooks, fewer than --codebooks "
                                         f"{codebooks}")
            return torch.from_numpy(array[:codebooks].astype(np.int64)), {"length": crop(path, array.shape[-1])}
        latent = torch.from_numpy(array.astype(np.float32))  # [Z, L]
        if not torch.isfinite(latent).all():
            raise UnusableFile(path, "contains NaN or infinite values")
        peak = latent.abs().max().item()
        if peak > LATENT_LIMIT:
            raise UnusableFile(path, f"latent values up to {peak:.3g}, beyond the decodable range of "
                                     f"+-{LATENT_LIMIT:g} (encoded latents are about unit scale)")
        return latent, {"length": crop(path, latent.shape[-1])}

    def crop(path: Path, frames: int) -> int:
        """The audio length to keep: the original's, from the sidecar, if there is one."""
        length = frames * model.hop_length
        sidecar = path.with_suffix(".json")
        if sidecar.is_file():
            try:
                info = json.loads(sidecar.read_text())
                length = min(length, round(info["length"] * model.sample_rate / info["sample_rate"]))
            except (ValueError, KeyError, TypeError) as error:
                raise UnusableFile(path, f"its sidecar {sidecar.name} is not a latent description ({error!r})")
        return length

    def write(target: Path, audio: Tensor, info: dict) -> None:
        write_audio(target, audio[:, : info["length"]], model.sample_rate, audio_format)

    def process(items: List[Tensor]) -> List[Tensor]:
        # latents, and codes of each number of codebooks, decode apart; outputs in input order
        outputs: List[Optional[Tensor]] = [None] * len(items)
        groups: Dict[Tuple[bool, int], List[int]] = {}
        for i, x in enumerate(items):
            groups.setdefault((x.is_floating_point(), 0 if x.is_floating_point() else x.shape[0]), []).append(i)
        for (is_latent, _), chosen in groups.items():
            function = codec.decode if is_latent else codec.decode_codes
            for i, y in zip(chosen, function([items[i] for i in chosen])):
                outputs[i] = y
        return outputs

    return run_files(planned, load, process, write, codec.window, run, progress)


def reconstruct_files(inputs: Sequence[PathLike], model: AutoEncoder, output: PathLike, audio_format: str = "wav",
                      compare: bool = False, batch_seconds: float = BATCH_SECONDS, progress: bool = True) -> FileRun:
    """Audio files -> ``output/<name>.<format>`` through the model (timbre transfer for other instruments).

    ``compare`` also writes ``<name>.png``: the input's and the output's spectrograms (channels mixed).
    """
    from rave_ddsp import plots  # matplotlib (Agg) only when needed

    codec, output = Codec(model, batch_seconds), Path(output)
    files, skipped = find_audio_files(inputs)
    run = FileRun("reconstruct", output, skipped=skipped)
    planned = plan_outputs(files, output, f".{audio_format}", run.skipped)
    originals: Dict[str, Tensor] = {}

    def load(path: Path) -> Tuple[Tensor, dict]:
        audio, info = load_model_audio(path, model)
        if compare:
            originals[str(path)] = audio
        return audio, info

    def write(target: Path, audio: Tensor, info: dict) -> None:
        write_audio(target, audio, model.sample_rate, audio_format)
        if compare:
            original = originals.pop(info["source"])
            figure = plots.spectrogram_panels(
                [original.mean(0).numpy(), audio.mean(0).numpy()],
                [f"original: {info['name']} ({model.sample_rate} Hz)", f"through {model.source.name}"],
                model.sample_rate)
            save_figure(figure, target.with_suffix(".png"))
            plots.plt.close(figure)

    return run_files(planned, load, codec.reconstruct, write, codec.window * model.hop_length, run, progress)

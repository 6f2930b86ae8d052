"""Evaluating trained models on a folder of audio: reconstruction quality, cost, disentanglement.

:func:`evaluate` reconstructs every file with each model, exactly as scripts/reconstruct.py
does (:class:`rave_ddsp.runtime.codec.Codec`), after resampling it to the model's rate and
converting its channels, and scores it at that rate with :mod:`rave_ddsp.analysis.metrics`
(F0 too unless ``pitch=False`` or torchcrepe is missing, which the report says). It
returns a JSON-ready report: settings and recipes, the machine, and per model its facts,
parameter count, realtime factor, per-file scores and their aggregates (mean and 95 %
Student-t interval, :func:`rave_ddsp.analysis.metrics.mean_and_ci95`). :func:`markdown` renders
the report as tables, models side by side.

The noise ablation (:func:`noise_ablation`, untimed): each file is reconstructed again with the
filtered-noise branch off (``noise_level`` 0); the difference from the reconstruction is the
branch's part, reported as its energy share in dB, with the mel distance without it. A model
without ``noise_level`` (an official RAVE export) gets None there.

A discrete model (``bottleneck: rvq``) is scored at its full bitrate, or, with ``codebooks``,
once per number of codebooks ``K`` (the first ``K``: a lower bitrate, same model), and its
codebooks' usage on the evaluated audio is reported: per codebook the perplexity (``exp`` of
the entropy of the codes chosen) over the codebook size, and the fraction of entries used.

The interpolation test (DDSP paper, Engel et al. 2020, sec. 5.2's latent interpolation):
file ``i`` is paired with file ``i + N // 2`` (sorted names); their latents are mixed frame
by frame over the common length, ``z = (1 - a) z_A + a z_B``, decoded, and the output's
loudness (and F0) is compared with A's and B's (:data:`INTERPOLATION_READING`).
"""
import importlib.util
import math
import os
import platform
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor
from tqdm import tqdm

from rave_ddsp.analysis import metrics
from rave_ddsp.data.audio import find_audio_files, load_audio
from rave_ddsp.dsp.filtered_noise import share_db
from rave_ddsp.runtime.codec import BATCH_SECONDS, Codec
from rave_ddsp.nn.quantizer import usage_statistics
from rave_ddsp.runtime.inference import has_noise_level, noise_level
from rave_ddsp.files import write_json, write_text
from rave_ddsp.errors import UnusableFile, UserError

INTERPOLATION_WEIGHTS = (0.0, 0.5, 1.0)
MIN_SAMPLES = metrics.MEL_WINDOW_LENGTHS[-1] // 2 + 1
"""Shortest file scored: the mel distance's largest window pads 1024 samples by reflection."""
TIMING_THREADS = 1
WARMUP_SECONDS = 1.0
F0_CONFIDENCE = 0.85

RECIPES = {
    "multiscale_stft": "the training spectral distance (rave_ddsp.train.losses.MultiScaleSTFT defaults): FFT 2048, 1024, "
                       "512, 256, 128, Hann, hop n/4; spectral convergence + mean |ln S_e - ln S_r|, each with a "
                       "white-noise floor (rave_ddsp.analysis.metrics.multiscale_stft_distance), averaged over scales",
    "mel_distance": "DAC's multi-scale mel distance: windows 32..2048 with 5..320 Slaney mels (0 Hz..Nyquist), "
                    "Hann, hop w/4; mean |log10(max(mel_e, 1e-5)) - log10(max(mel_r, 1e-5))|, summed over the "
                    "7 scales",
    "si_sdr_db": "SI-SDR (Le Roux et al. 2019), mean removed, channels joined, capped at 120 dB (informational)",
    "loudness_l1_db": "DDSP's loudness (16 kHz, n_fft 512, hop 64, A-weighted power averaged over bins, 10 log10, "
                      "-80 dB floor); mean |difference| over frames and channels",
    "f0_l1_cents": "CREPE F0 (torchcrepe weights, local weighted-mean decoding, 10 ms hop); mean |1200 log2("
                   "f0_e / f0_r)| over frames where the reference's confidence >= 0.85",
    "f0_rmse_cents": "root mean square of the same cents errors",
    "f0_outlier": "fraction of files whose F0 L1 exceeds 1200 cents (files without a confident frame left out)",
    "f0_pitched": "of the frames the F0 metrics score (the input's CREPE confidence >= 0.85), the fraction where "
                  "the output's confidence reaches 0.85 too; near 0 the output has no clear pitch there and the F0 "
                  "errors measure CREPE's guesses in noise rather than a wrong pitch",
    "noise_share_db": "energy of the filtered-noise branch relative to the whole output, 10 log10(sum n^2 / sum y^2) "
                      "over channels and samples, n = y - y0 with y the reconstruction and y0 the same with "
                      "noise_level 0 (the noise table is deterministic and the PQMF synthesis linear, so n is the "
                      "branch's part); -200 dB for n = 0; higher: more noise; '-' for a model without noise_level",
    "mel_distance_no_noise": "the mel distance of y0 (reconstruction with the noise branch off) to the input; the "
                             "ablation row is 100 (mean without noise - mean with) / mean with, in %",
}
DIGITS = {"multiscale_stft": 3, "mel_distance": 3, "si_sdr_db": 2, "loudness_l1_db": 2, "f0_l1_cents": 1,
          "f0_rmse_cents": 1, "f0_outlier": 3, "f0_pitched": 3,
          "noise_share_db": 2, "mel_distance_no_noise": 3}
LABELS = {
    "multiscale_stft": "multi-scale STFT distance ↓",
    "mel_distance": "mel distance (DAC) ↓",
    "si_sdr_db": "SI-SDR (dB) ↑",
    "loudness_l1_db": "loudness L1 (dB) ↓",
    "f0_l1_cents": "F0 L1 (cents) ↓",
    "f0_rmse_cents": "F0 RMSE (cents) ↓",
    "f0_outlier": "F0 outlier ratio ↓",
    "f0_pitched": "F0: output pitched where the input is ↑",
    "noise_share_db": "noise branch energy share (dB)",
    "mel_distance_no_noise": "mel distance, noise branch off",
}
NOISE_KEYS = ("noise_share_db", "mel_distance_no_noise")
ABLATION_LABEL = "mel distance change, noise off (%)"
SILENCE_SECONDS = 2.0
SILENCE_LABEL = f"output for {SILENCE_SECONDS:g} s of digital silence (dB RMS) ↓"
SILENCE_RECIPE = (f"{SILENCE_SECONDS:g} s of zeros reconstructed as the files are; 10 log10 of the output's mean "
                  "square over channels and samples, -200 dB for exact zeros (a model that hums or hisses in "
                  "silence shows here; the loudness L1 sees it only where the files are silent)")
INTERPOLATION_READING = (
    "For each pair (A, B) and weight a, the output of z = (1 - a) z_A + a z_B is compared with A and with B. "
    "At a = 0 it is A's reconstruction: its error against A is the reconstruction error, against B the gap "
    "between the sources; a = 1 swaps the roles. 'share B' = err_A / (err_A + err_B) says which source an "
    "attribute follows: 0 follows A, 1 follows B. A share near a means the attribute moves smoothly with the "
    "mix; near 0 or 1 in the middle means it switches abruptly; errors against both sources above those at "
    "a = 0 and 1 mean the mix leaves both (e.g. a pitch that is neither A's nor B's).")


def parameter_count(model) -> int:
    """Parameters of what runs at inference: encoder and decoder (weight norm folded); a .ts's own parameters."""
    return sum(p.numel() for p in model.module.parameters())


ISA_FLAGS = {"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8"}
"""The CPU features that change which kernels torch runs (and so the timings)."""


def cpu_description() -> Tuple[str, List[str]]:
    """The first processor's model name and its :data:`ISA_FLAGS` (Linux ``/proc/cpuinfo``; else what
    :mod:`platform` knows and no flags)."""
    cpu, flags = platform.processor() or platform.machine() or "unknown", set()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    cpu = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
                if not line.strip():  # the end of the first processor's block
                    break
    except OSError:
        pass
    return cpu, sorted(flags & ISA_FLAGS)


def machine(device: torch.device) -> dict:
    cpu, isa = cpu_description()
    info = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(), "cpu": cpu,
            "isa": isa, "python": platform.python_version(), "torch": torch.__version__,
            "cpu_count": os.cpu_count(), "device": str(device)}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def mean_ci(values: Sequence[float]) -> dict:
    summary = metrics.mean_and_ci95([math.nan if v is None else v for v in values])
    return {"mean": summary.mean, "ci95": summary.half_width, "n": summary.n}


def aggregate(rows: Sequence[dict], keys: Sequence[str]) -> Dict[str, dict]:
    """``{key: {mean, ci95, n}}`` over the rows that have the key (NaN and None left out)."""
    return {key: mean_ci([row[key] for row in rows]) for key in keys if any(key in row for row in rows)}


def load_reference(path: Path, model) -> Tensor:
    """A file at the model's rate and channels ``[C, T]``; :class:`UnusableFile` if unusable or too short."""
    audio = torch.from_numpy(load_audio(path, model.sample_rate, model.channels))  # [C, T]
    if audio.shape[-1] < MIN_SAMPLES:
        raise UnusableFile(path, f"{audio.shape[-1]} samples at {model.sample_rate} Hz; "
                                    f"scoring needs at least {MIN_SAMPLES}")
    return audio


def timed(function, *args):
    """``(function(*args), wall seconds)`` with torch on :data:`TIMING_THREADS` thread(s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(TIMING_THREADS)
    try:
        start = time.perf_counter()
        result = function(*args)
        return result, time.perf_counter() - start
    finally:
        torch.set_num_threads(threads)


def share(error_a: float, error_b: float) -> float:
    total = error_a + error_b
    return error_a / total if total > 0 else math.nan


def interpolation_pairs(n: int) -> List[Tuple[int, int]]:
    """File ``i`` with file ``i + n // 2``, for ``i < n // 2``: distant in sorted order (often another source)."""
    return [(i, i + n // 2) for i in range(n // 2)]


def interpolation_test(codec: Codec, files: Sequence[Tuple[Path, str]], pitch: bool, crepe_model: str) -> dict:
    """Mix latents of file pairs at :data:`INTERPOLATION_WEIGHTS`; score loudness (and F0) against both sources."""
    model = codec.model
    pairs = interpolation_pairs(len(files))
    rows = []
    for i, j in pairs:
        (path_a, name_a), (path_b, name_b) = files[i], files[j]
        audio_a, audio_b = load_reference(path_a, model), load_reference(path_b, model)  # [C, T] each
        latent_a, latent_b = codec.encode([audio_a, audio_b])  # [Z, L] each
        frames = min(latent_a.shape[-1], latent_b.shape[-1])
        mixes = [(1 - a) * latent_a[:, :frames] + a * latent_b[:, :frames] for a in INTERPOLATION_WEIGHTS]
        length = min(audio_a.shape[-1], audio_b.shape[-1])
        sources = {tag: audio[None, :, :length].to(model.device) for tag, audio in (("a", audio_a), ("b", audio_b))}
        tracks = {tag: metrics.f0(x, model.sample_rate, crepe_model) for tag, x in sources.items()} if pitch else {}
        for weight, output in zip(INTERPOLATION_WEIGHTS, codec.decode(mixes)):
            output = output[None, :, :length].to(model.device)  # [1, C, T]
            row = {"a": name_a, "b": name_b, "weight": weight}
            for tag, source in sources.items():
                row[f"loudness_l1_db_vs_{tag}"] = float(metrics.loudness_l1(source, output, model.sample_rate)[0])
            row["loudness_share_b"] = share(row["loudness_l1_db_vs_a"], row["loudness_l1_db_vs_b"])
            if pitch:
                f0_output, _ = metrics.f0(output, model.sample_rate, crepe_model)
                for tag, (f0_source, confidence) in tracks.items():
                    scores = metrics.f0_scores(f0_source, confidence, f0_output, F0_CONFIDENCE)
                    row[f"f0_l1_cents_vs_{tag}"] = float(scores.l1_cents[0])
                row["f0_share_b"] = share(row["f0_l1_cents_vs_a"], row["f0_l1_cents_vs_b"])
            rows.append(row)
    keys = [key for key in (rows[0] if rows else {}) if key not in ("a", "b", "weight")]
    return {
        "pairing": "file i with file i + N // 2 (sorted names), i < N // 2; latents mixed over the common length",
        "weights": list(INTERPOLATION_WEIGHTS),
        "pairs": [[files[i][1], files[j][1]] for i, j in pairs],
        "per_pair": rows,
        "aggregate": {str(a): aggregate([r for r in rows if r["weight"] == a], keys) for a in INTERPOLATION_WEIGHTS},
        "reading": INTERPOLATION_READING,
    }


def noise_ablation(codec: Codec, reference: Tensor, estimate: Tensor) -> Dict[str, Optional[float]]:
    """The noise branch's energy share in ``estimate`` and the mel distance without it (:data:`NOISE_KEYS`).

    ``reference`` ``[C, T]`` (on the CPU) is reconstructed again with ``noise_level`` 0;
    ``estimate`` ``[C, T]`` is its reconstruction as the model stands. None for both if the
    model has no noise_level.
    """
    model = codec.model
    if not has_noise_level(model):
        return dict.fromkeys(NOISE_KEYS)
    with noise_level(model, 0.0):
        (clean,) = codec.reconstruct([reference])  # [C, T]
    reference, estimate, clean = (x[None].to(model.device) for x in (reference, estimate, clean))  # [1, C, T]
    return {"noise_share_db": float(metrics.energy_share_db(estimate - clean, estimate)[0]),
            "mel_distance_no_noise": float(metrics.mel_distance(reference, clean, model.sample_rate)[0])}


def silence_level_db(codec: Codec) -> float:
    """What the model makes of :data:`SILENCE_SECONDS` of digital silence, in dB RMS (:data:`SILENCE_RECIPE`)."""
    model = codec.model
    torch.manual_seed(0)  # an official RAVE export samples its latent
    (output,) = codec.reconstruct([torch.zeros(model.channels, int(SILENCE_SECONDS * model.sample_rate))])
    return float(share_db(output.double().pow(2).mean(), torch.tensor(1.0)))  # relative to full scale


def relative_change_pct(before: float, after: float) -> float:
    """``100 (after - before) / before`` (NaN if either is missing or ``before`` is 0)."""
    return 100 * (after - before) / before if math.isfinite(before) and math.isfinite(after) and before else math.nan


def pitch_skipped(pitch: bool) -> Optional[str]:
    """Why F0 is not scored, for the report (None when it is)."""
    if not pitch:
        return "--no-pitch"
    if importlib.util.find_spec("torchcrepe") is None:
        return f"torchcrepe not installed ({metrics.PITCH_EXTRA})"
    return None


def evaluate_model(model, files: Sequence[Tuple[Path, str]], pitch: bool = True, crepe_model: str = "full",
                   interpolation: bool = False, batch_seconds: float = BATCH_SECONDS, progress: bool = True,
                   codebooks: Optional[int] = None) -> dict:
    """One model's part of the report (``model``: an :class:`rave_ddsp.runtime.inference.AutoEncoder` or alike);
    a discrete model with its first ``codebooks`` (default: all)."""
    n_codebooks = getattr(model, "n_codebooks", 0)
    if codebooks is None or not n_codebooks:
        return score_model(model, files, pitch, crepe_model, interpolation, batch_seconds, progress)
    previous = int(model.module.get_codebooks()[0])
    if model.module.set_codebooks(codebooks) != 0:
        raise UserError(f"--codebooks {codebooks}: {model.source} has {n_codebooks} codebooks")
    try:
        return score_model(model, files, pitch, crepe_model, interpolation, batch_seconds, progress)
    finally:
        model.module.set_codebooks(previous)


def score_model(model, files: Sequence[Tuple[Path, str]], pitch: bool, crepe_model: str, interpolation: bool,
                batch_seconds: float, progress: bool) -> dict:
    """:func:`evaluate_model` at the model's current settings."""
    codec = Codec(model, batch_seconds)
    n_codebooks = getattr(model, "n_codebooks", 0)
    counts = torch.zeros(n_codebooks, max(1, getattr(model, "codebook_size", 0)), dtype=torch.float64)
    usable, skipped, rows = [], [], []
    for path, name in tqdm(files, desc=f"evaluate {model.source.name}", unit="file", disable=not progress):
        try:
            reference = load_reference(path, model)  # [C, T]
        except UnusableFile as error:
            skipped.append({"file": name, "reason": error.reason})
            continue
        if not rows:  # warm up on the first file: TorchScript optimises during its first calls
            for _ in range(2):
                codec.reconstruct([reference[:, : max(MIN_SAMPLES, int(WARMUP_SECONDS * model.sample_rate))]])
        torch.manual_seed(0)  # an official RAVE export samples its latent: the same draws for every run
        (estimate,), seconds = timed(codec.reconstruct, [reference])  # [C, T]
        scores = metrics.evaluate_pair(reference.to(model.device), estimate.to(model.device), model.sample_rate,
                                       pitch, crepe_model)
        rows.append({"file": name, "seconds": reference.shape[-1] / model.sample_rate,
                     "reconstruction_seconds": seconds, **scores, **noise_ablation(codec, reference, estimate)})
        usable.append((path, name))
        if n_codebooks:
            for row, codes in enumerate(codec.encode_codes([reference])[0]):  # [L] per codebook
                counts[row] += torch.bincount(codes, minlength=counts.shape[1]).double()
    if not rows:
        reasons = "; ".join(f"{s['file']}: {s['reason']}" for s in skipped)
        raise UserError(f"no usable audio for {model.source}: {reasons}")
    audio_seconds = sum(row["seconds"] for row in rows)
    compute_seconds = sum(row["reconstruction_seconds"] for row in rows)
    statistics = aggregate(rows, list(LABELS))
    result = {
        "model": str(model.source), "kind": "torchscript" if model.source.suffix == ".ts" else "checkpoint",
        "sample_rate": model.sample_rate, "channels": model.channels, "hop_length": model.hop_length,
        "latent_size": model.latent_size, "parameters": parameter_count(model),
        "precision": getattr(model, "precision", "32"),
        "noise_level": float(model.module.get_noise_level()[0]) if has_noise_level(model) else None,
        "realtime_factor": compute_seconds / audio_seconds, "audio_seconds": audio_seconds,
        "reconstruction_seconds": compute_seconds, "files": rows, "skipped": skipped, "aggregate": statistics,
        "mel_distance_no_noise_change_pct": relative_change_pct(statistics["mel_distance"]["mean"],
                                                                statistics["mel_distance_no_noise"]["mean"]),
        "silence_db": silence_level_db(codec),
    }
    if n_codebooks:
        used = int(model.module.get_codebooks()[0])
        perplexity, fraction = usage_statistics(counts)
        result.update({
            "codebooks": used, "n_codebooks": n_codebooks, "codebook_size": model.codebook_size,
            "bitrate_bps": model.bitrate * used / n_codebooks,
            "codebook_perplexity_over_size": (perplexity / model.codebook_size).tolist(),
            "codebook_entries_used": fraction.tolist(),
        })
    if interpolation:
        result["interpolation"] = interpolation_test(codec, usable, pitch, crepe_model)
    return result


def evaluate(models: Sequence, data: Path, pitch: bool = True, crepe_model: str = "full",
             interpolation: bool = False, max_files: Optional[int] = None, batch_seconds: float = BATCH_SECONDS,
             progress: bool = True, codebooks: Optional[Sequence[int]] = None) -> dict:
    """The report for ``models`` (at least one) on the audio files in the folder ``data`` (the first ``max_files``).

    F0 is scored if ``pitch`` and torchcrepe is installed; otherwise ``settings["f0_not_computed"]`` says why.
    Discrete models are scored once per number of codebooks in ``codebooks`` (those they have; default: all).
    """
    for k in codebooks or ():
        if k < 1:
            raise UserError(f"--codebooks {k}: expected 1 or more")
    data = Path(data)
    if not data.is_dir():
        raise UserError(f"--data {data}: no such folder")
    if max_files is not None and max_files < 1:
        raise UserError(f"--max-files {max_files}: expected at least 1")
    f0_not_computed = pitch_skipped(pitch)
    pitch = f0_not_computed is None
    files, _ = find_audio_files([data])
    if not files:
        raise UserError(f"--data {data}: no audio files in this folder")
    files = files[:max_files]
    settings = {
        "data": str(data), "files": len(files), "max_files": max_files, "pitch": pitch,
        "f0_not_computed": f0_not_computed, "crepe_model": crepe_model if pitch else None,
        "f0_confidence_threshold": F0_CONFIDENCE,
        "interpolation": interpolation, "batch_seconds": batch_seconds,
        "sample_rate": "each model's own: files are resampled (torchaudio) and their channels converted to the "
                       "model's, and scored at that rate",
        "aggregate": "mean over files and half-width of the 95 % Student-t interval (NaN below 2 files)",
        "realtime_factor": f"wall time of reconstruction (encode + decode, windowed as scripts/reconstruct.py, "
                           f"after a warm-up) / audio duration, torch on {TIMING_THREADS} thread(s); the "
                           f"noise ablation's second reconstruction is not timed",
        "parameters": "parameters of encoder and decoder as run for inference (weight norm folded)",
        "silence": SILENCE_RECIPE,
        "recipes": {key: RECIPES[key] for key in LABELS if pitch or not key.startswith("f0")},
    }
    runs = [(model, k) for model in models
            for k in ([k for k in codebooks if k <= model.n_codebooks] or [None]
                      if codebooks and getattr(model, "n_codebooks", 0) else [None])]
    return {"settings": settings, "machine": machine(models[0].device),
            "models": [evaluate_model(model, files, pitch, crepe_model, interpolation, batch_seconds, progress, k)
                       for model, k in runs]}


# ---------------------------------------------------------------------------- output --
def json_ready(value):
    """``value`` with every NaN or infinite float as None (JSON has no NaN)."""
    if isinstance(value, dict):
        return {key: json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def cell(statistic: dict, digits: int) -> str:
    """``mean ± half-width`` (the mean alone below two files; '-' without a value)."""
    mean, half_width = statistic.get("mean"), statistic.get("ci95")
    if mean is None or not math.isfinite(mean):
        return "-"
    if half_width is None or not math.isfinite(half_width):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {half_width:.{digits}f}"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> List[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def markdown(report: dict) -> str:
    """The report as Markdown: one table with the models side by side, the recipes, interpolation tables."""
    settings, models = report["settings"], report["models"]
    lines = [f"# Evaluation on {settings['data']} ({settings['files']} files)", "",
             "Metrics at each model's own sample rate (files resampled to it). Cells: mean ± half-width of the "
             "95 % Student-t interval over the files scored.", ""]
    if settings["f0_not_computed"]:
        lines += [f"F0 not computed: {settings['f0_not_computed']}.", ""]
    rows = [[LABELS[key]] + [cell(m["aggregate"][key], DIGITS[key]) for m in models]
            for key in LABELS if key in models[0]["aggregate"]]
    changes = [m["mel_distance_no_noise_change_pct"] for m in models]
    rows += [[ABLATION_LABEL] + [f"{c:+.1f}" if c is not None and math.isfinite(c) else "-" for c in changes],
             [SILENCE_LABEL] + [f"{m['silence_db']:.1f}" for m in models],
             ["parameters"] + [f"{m['parameters'] / 1e6:.3f} M" for m in models],
             [f"realtime factor ({TIMING_THREADS} thread) ↓"] + [f"{m['realtime_factor']:.4f}" for m in models],
             ["precision"] + [m["precision"] for m in models],
             ["sample rate"] + [f"{m['sample_rate']} Hz" for m in models],
             ["codes: codebooks (bitrate)"] + [f"{m['codebooks']} of {m['n_codebooks']} ({m['bitrate_bps'] / 1000:.2f} "
                                               "kbps)" if "codebooks" in m else "-" for m in models],
             ["codebook perplexity / size (mean of those used)"] + [
                 f"{sum(m['codebook_perplexity_over_size'][:m['codebooks']]) / m['codebooks']:.3f}"
                 if "codebooks" in m else "-" for m in models],
             ["files scored"] + [str(len(m["files"])) for m in models]]
    lines += table(["metric"] + [m["model"] + (f" ({m['codebooks']} codebooks)" if "codebooks" in m else "")
                                 for m in models], rows)
    lines += ["", "Recipes:", ""] + [f"- {LABELS[key]}: {text}" for key, text in settings["recipes"].items()]
    lines += [f"- realtime factor: {settings['realtime_factor']}", f"- parameters: {settings['parameters']}",
              f"- output for digital silence: {settings['silence']}"]
    for model in models:
        if model["skipped"]:
            lines += ["", f"Skipped by {model['model']}:"] + [f"- {s['file']}: {s['reason']}" for s in model["skipped"]]
    interpolated = [model for model in models if "interpolation" in model]
    for model in interpolated:
        lines += [""] + interpolation_markdown(model["model"], model["interpolation"])
    if interpolated:
        lines += ["", INTERPOLATION_READING]
    return "\n".join(lines) + "\n"


def interpolation_markdown(name: str, result: dict) -> List[str]:
    lines = [f"## Interpolation: {name}", ""]
    if not result["pairs"]:
        return lines + ["Needs at least two files."]
    keys = [("loudness_l1_db_vs_a", "loudness L1 vs A (dB)", 2), ("loudness_l1_db_vs_b", "vs B (dB)", 2),
            ("loudness_share_b", "share B", 2), ("f0_l1_cents_vs_a", "F0 L1 vs A (cents)", 1),
            ("f0_l1_cents_vs_b", "vs B (cents)", 1), ("f0_share_b", "share B", 2)]
    keys = [k for k in keys if k[0] in result["aggregate"][str(result["weights"][0])]]
    rows = [[f"{a:g}"] + [cell(result["aggregate"][str(a)][key], digits) for key, _, digits in keys]
            for a in result["weights"]]
    lines += [f"{len(result['pairs'])} pair(s), {result['pairing']}.", ""]
    return lines + table(["a"] + [label for _, label, _ in keys], rows)


def check_report_path(path: Path) -> None:
    """Raise :class:`UserError` unless ``path`` can take the report (a .json file, not a folder)."""
    path = Path(path)
    if path.suffix != ".json" or path.is_dir():
        raise UserError(f"--output {path}: expected a .json file (the Markdown goes next to it)")
    if path.parent.exists() and not path.parent.is_dir():
        raise UserError(f"--output {path}: {path.parent} is not a folder")


def write_report(report: dict, path: Path) -> Tuple[Path, Path]:
    """Write the report as JSON at ``path`` and as Markdown next to it (``.md``), atomically."""
    path = Path(path)
    check_report_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, json_ready(report))
    write_text(path.with_suffix(".md"), markdown(report))
    return path, path.with_suffix(".md")

"""PQMF: speed (1 thread, realtime factor at 44.1 kHz) and reconstruction quality.

    python -m benchmarks.bench_pqmf

Speed: analysis, synthesis and both, offline on 10 s and streaming (eager and scripted) at
nn~'s buffer of 2048 samples, for 16 bands and several prototype lengths. Quality, per design: peak stopband
gain, predicted white-noise SNR (``reconstruction_snr``) and the measured float32 round
trip SNR on white noise and on the dev phrases (/work/shared/data/dev/phrases, if present),
outer ``n_taps`` samples cropped. The reference is a Kaiser-windowed sinc whose cutoff
minimises ``max |g[2Mk]|`` (the classic near-PR design, as in RAVE), built here from the math.
"""
import glob
import time

import numpy as np
import scipy.optimize
import scipy.signal
import torch

from benchmarks.common import median, time_call, write_results
from rave_ddsp.dsp.pqmf import PQMF, design_prototype, nyquist_residuals, peak_stopband_db, polyphase_kernels, \
    reconstruction_snr

SAMPLE_RATE = 44100
BANDS = 16
SECONDS = 10.0
BUFFER = 2048
PHRASES = "/work/shared/data/dev/phrases/*.flac"
KAISER_TAPS = 377  # the length of the reference design for 16 bands at 100 dB


def kaiser_reference(n_bands: int, n_taps: int, attenuation: float) -> np.ndarray:
    """``[N]``: Kaiser-windowed sinc, cutoff chosen to minimise the worst Nyquist(2M) residual."""
    n = np.arange(n_taps) - (n_taps - 1) / 2
    window = np.kaiser(n_taps, scipy.signal.kaiser_beta(attenuation))

    def prototype(cutoff: float) -> np.ndarray:
        h = cutoff / np.pi * np.sinc(cutoff / np.pi * n) * window
        return h / h.sum()

    nominal = np.pi / (2 * n_bands)
    best = scipy.optimize.minimize_scalar(
        lambda cutoff: np.log(np.abs(nyquist_residuals(prototype(cutoff), n_bands)).max()),
        bounds=(0.5 * nominal, 1.5 * nominal), method="bounded", options={"xatol": 1e-10})
    return prototype(best.x)


def with_prototype(prototype: np.ndarray, n_bands: int) -> PQMF:
    """An offline PQMF running the given prototype (same length, kernels replaced)."""
    pqmf = PQMF(n_bands, n_taps=len(prototype))
    analysis, synthesis, _, _ = polyphase_kernels(prototype, n_bands)
    pqmf.analysis_kernel.copy_(torch.tensor(analysis))
    pqmf.synthesis_kernel.copy_(torch.tensor(synthesis))
    return pqmf


def round_trip_snr(pqmf: PQMF, x: np.ndarray) -> float:
    """Offline float32 round-trip SNR (dB) of ``x [T]``, outer ``n_taps`` samples cropped."""
    x = x[: len(x) - len(x) % pqmf.n_bands]
    with torch.no_grad():
        y = pqmf.inverse(pqmf(torch.tensor(x, dtype=torch.float32).reshape(1, 1, -1)))[0, 0].double().numpy()
    crop = pqmf.n_taps
    error = x[crop:-crop] - y[crop:-crop]
    return float(10 * np.log10(np.sum(x[crop:-crop] ** 2) / np.sum(error**2)))


def quality() -> dict:
    import soundfile

    phrases = [soundfile.read(path, dtype="float64")[0] for path in sorted(glob.glob(PHRASES))]
    phrases = [p.mean(axis=1) if p.ndim == 2 else p for p in phrases]  # [T] mono
    white = np.random.default_rng(0).standard_normal(int(SECONDS * SAMPLE_RATE))
    designs = {}
    for name, design in [(f"kaiser reference, {KAISER_TAPS} taps", lambda: kaiser_reference(BANDS, KAISER_TAPS, 100.0)),
                         ("slepian, attenuation=100 (default)", lambda: design_prototype(BANDS, 100.0)),
                         ("slepian, attenuation=120", lambda: design_prototype(BANDS, 120.0))]:
        start = time.perf_counter()
        prototype = design()
        designs[name] = (prototype, time.perf_counter() - start)
    results = {}
    for name, (prototype, design_seconds) in designs.items():
        pqmf = with_prototype(prototype, BANDS)
        snrs = [round_trip_snr(pqmf, phrase) for phrase in phrases]
        results[name] = {
            "taps": len(prototype),
            "design_s": design_seconds,
            "delay_samples": pqmf.delay,
            "peak_stopband_db": peak_stopband_db(prototype, BANDS),
            "predicted_white_snr_db": reconstruction_snr(prototype, BANDS),
            "white_snr_db": round_trip_snr(pqmf, white),
            "phrases": len(snrs),
            "phrases_median_snr_db": median(snrs) if snrs else float("nan"),
            "phrases_min_snr_db": min(snrs) if snrs else float("nan"),
        }
    return results


def speed() -> dict:
    samples = int(SECONDS * SAMPLE_RATE) // BANDS * BANDS
    x = torch.randn(1, 1, samples)
    chunk = torch.randn(1, 1, BUFFER)
    results = {}
    for n_taps in (0, KAISER_TAPS, 511):
        offline = PQMF(BANDS, n_taps=n_taps)
        bands = offline(x)
        streaming = PQMF(BANDS, n_taps=n_taps, streaming=True)
        scripted = PQMF(BANDS, n_taps=n_taps, streaming=True)
        scripted.inverse(scripted(chunk))  # creates the caches before scripting
        scripted = torch.jit.script(scripted)
        with torch.no_grad():
            analysis = median(time_call(lambda: offline(x)))
            synthesis = median(time_call(lambda: offline.inverse(bands)))
            both = median(time_call(lambda: offline.inverse(offline(x))))
            per_buffer = median(time_call(lambda: streaming.inverse(streaming(chunk)), repeats=300, warmup=10))
            per_buffer_scripted = median(time_call(lambda: scripted.inverse(scripted(chunk)), repeats=300, warmup=10))
        results[f"{offline.n_taps} taps"] = {
            "analysis_realtime_factor": SECONDS / analysis,
            "synthesis_realtime_factor": SECONDS / synthesis,
            "round_trip_s_per_10s": both,
            "round_trip_realtime_factor": SECONDS / both,
            "streaming_ms_per_buffer": 1000 * per_buffer,
            "streaming_realtime_factor": BUFFER / SAMPLE_RATE / per_buffer,
            "scripted_streaming_ms_per_buffer": 1000 * per_buffer_scripted,
            "scripted_streaming_realtime_factor": BUFFER / SAMPLE_RATE / per_buffer_scripted,
        }
    return results


def main() -> None:
    torch.set_num_threads(1)
    results = {"quality": quality(), "speed": speed()}  # quality first: it times the designs
    path = write_results("pqmf", {"sample_rate": SAMPLE_RATE, "bands": BANDS, "threads": 1,
                                  "signal_seconds": SECONDS, "buffer": BUFFER, "phrases": PHRASES}, results)
    for section, rows in results.items():
        print(f"## {section}")
        for name, values in rows.items():
            print(f"{name:36s} " + "  ".join(f"{k}={v:.4g}" for k, v in values.items()))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

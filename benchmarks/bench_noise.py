"""Filtered-noise synthesis: speed (1 thread, realtime factor at 44.1 kHz) and spectral accuracy.

    python -m benchmarks.bench_noise

Speed: the DSP alone (``filtered_noise``) and the ``FilteredNoise`` module (conv stack +
DSP), offline on 10 s and streaming at nn~'s buffer of 2048 samples, for 16 PQMF bands.
Accuracy: largest deviation of the realised PSD from the windowed response (request
within 40 dB of its maximum) and within-frame energy modulation, for this design and for
the truncated, wrapped scheme of RAVE / ddsp_pytorch (reimplemented from its description
in tests/dsp/test_filtered_noise.py).
"""
import torch

from benchmarks.common import median, time_call, write_results
from rave_ddsp.dsp import filtered_noise as dsp
from rave_ddsp.nn.noise import FilteredNoise
from tests.test_dsp import frame_modulation_db, psd_error_db, smooth_request, truncated_wrapped_noise

SAMPLE_RATE = 44100
BANDS = 16
SECONDS = 10.0
BUFFER = 2048


def speed() -> dict:
    band_samples = int(SECONDS * SAMPLE_RATE) // BANDS
    results = {}
    for n_frequencies, frame_size in [(5, 64), (33, 64)]:
        frames = band_samples // frame_size
        magnitudes = torch.rand(1, BANDS, frames, n_frequencies)
        seconds = median(time_call(lambda: dsp.filtered_noise(magnitudes, frame_size), repeats=20))
        results[f"filtered_noise K={n_frequencies} S={frame_size}"] = {
            "median_s_per_10s": seconds, "realtime_factor": SECONDS / seconds}
    module = FilteredNoise(128, BANDS, n_frequencies=5, ratios=(4, 4, 4)).eval()
    hidden = torch.randn(1, 128, (band_samples // 64) * 64)
    with torch.no_grad():
        seconds = median(time_call(lambda: module(hidden), repeats=10))
    results["FilteredNoise(H=128, K=5, ratios 4,4,4) offline"] = {
        "median_s_per_10s": seconds, "realtime_factor": SECONDS / seconds}
    streaming = FilteredNoise(128, BANDS, n_frequencies=5, ratios=(4, 4, 4), streaming=True).eval()
    chunk = torch.randn(1, 128, BUFFER // BANDS)
    with torch.no_grad():
        per_buffer = median(time_call(lambda: streaming(chunk), repeats=200, warmup=5))
    results["FilteredNoise(H=128, K=5, ratios 4,4,4) streaming, buffer 2048"] = {
        "median_ms_per_buffer": 1000 * per_buffer, "realtime_factor": BUFFER / SAMPLE_RATE / per_buffer}
    return results


def accuracy() -> dict:
    torch.manual_seed(0)
    results = {}
    for n_frequencies, frame_size in [(5, 64), (65, 64), (33, 256)]:
        n_frames = 2 ** 20 // frame_size
        magnitudes = smooth_request(n_frequencies).expand(n_frames, -1)
        noise = torch.rand(n_frames * frame_size, dtype=torch.float64) * 2 - 1
        ours = dsp.filtered_noise(magnitudes, frame_size, noise).numpy()
        flawed = truncated_wrapped_noise(magnitudes, frame_size, noise).numpy()
        results[f"K={n_frequencies} S={frame_size}"] = {
            "ours_max_psd_error_db": psd_error_db(ours, magnitudes[0]),
            "ours_frame_modulation_db": frame_modulation_db(ours, frame_size),
            "truncated_wrapped_max_psd_error_db": psd_error_db(flawed, magnitudes[0]),
            "truncated_wrapped_frame_modulation_db": frame_modulation_db(flawed, frame_size),
        }
    return results


def main() -> None:
    torch.set_num_threads(1)
    results = {"speed": speed(), "accuracy": accuracy()}
    path = write_results("noise", {"sample_rate": SAMPLE_RATE, "bands": BANDS, "threads": 1,
                                   "signal_seconds": SECONDS, "buffer": BUFFER}, results)
    for section, rows in results.items():
        print(f"## {section}")
        for name, values in rows.items():
            print(f"{name:60s} " + "  ".join(f"{k}={v:.3g}" for k, v in values.items()))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

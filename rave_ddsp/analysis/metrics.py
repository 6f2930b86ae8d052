"""Evaluation metrics on audio tensors: the numbers a model is judged by.

Every distance takes a reference and an estimate of the same shape ``[B, C, T]`` and
returns one value per example, ``[B]``, so that per-file reports and confidence
intervals (:func:`mean_and_ci95`) come from the same call. :func:`evaluate_pair` does
all of them for one file ``[C, T]``.

Pitch (:func:`f0`, :func:`f0_metrics`) needs torchcrepe, an optional extra
(``pip install 'rave_ddsp[pitch]'``); everything else needs only torch and torchaudio.
"""
import math
from typing import Dict, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torchaudio
from scipy import stats
from torch import Tensor

from rave_ddsp.dsp.filtered_noise import share_db
from rave_ddsp.errors import UserError
from rave_ddsp.train.losses import MultiScaleSTFT

# DAC's multi-scale mel distance (descript-audio-codec conf/base.yml, MelSpectrogramLoss).
MEL_WINDOW_LENGTHS = (32, 64, 128, 256, 512, 1024, 2048)
MEL_N_MELS = (5, 10, 20, 40, 80, 160, 320)
MEL_CLAMP = 1e-5  # floor on mel magnitudes before log10 (DAC's clamp_eps)

# DDSP's loudness (ddsp.spectral_ops.compute_loudness, v2 and later defaults).
LOUDNESS_SAMPLE_RATE = 16000
LOUDNESS_N_FFT = 512
LOUDNESS_HOP = 64          # 16 kHz / 250 frames per second
LOUDNESS_RANGE_DB = 80.0   # ddsp.core.DB_RANGE: power floor and output floor at -80 dB
A_WEIGHTING_MIN_DB = -80.0  # librosa.A_weighting's floor (only the DC bin reaches it)

# IEC 61672-1 A-weighting pole frequencies (Hz) and the offset making A(1 kHz) = 0 dB.
_A_POLES = (20.598997, 107.65265, 737.86223, 12194.217)
_A_OFFSET_DB = 2.0

# CREPE (Kim et al. 2018): 16 kHz, 1024-sample frames, 360 bins 20 cents apart,
# bin 0 at 1997.38 cents above 10 Hz (32.7 Hz); pitch = activation-weighted mean of
# the cents of the 9 bins around the argmax; confidence = the largest activation.
CREPE_SAMPLE_RATE = 16000
CREPE_HOP = 160            # 10 ms, CREPE's default step
CREPE_CENTS_PER_BIN = 20.0
CREPE_BIN0_CENTS = 1997.3794084376191
CREPE_LOCAL_BINS = 4       # bins either side of the argmax in the weighted mean
CREPE_FRAMES_PER_BATCH = 256  # bounds memory: the 'full' model's first layer is 1 MB a frame
F0_OUTLIER_CENTS = 1200.0  # an example whose mean error exceeds an octave is an outlier
SI_SDR_MAX_DB = 120.0      # cap: identical signals would otherwise be +inf

PITCH_EXTRA = "pip install 'rave_ddsp[pitch]'"


def _check_pair(reference: Tensor, estimate: Tensor) -> None:
    if reference.ndim != 3 or reference.shape != estimate.shape:
        raise ValueError(f"reference {tuple(reference.shape)} and estimate {tuple(estimate.shape)}: "
                         "expected two [B, C, T] tensors of the same shape")


def multiscale_stft_distance(reference: Tensor, estimate: Tensor) -> Tensor:
    """The training spectral distance, :class:`rave_ddsp.train.losses.MultiScaleSTFT` with its defaults.

    FFT sizes 2048, 1024, 512, 256, 128 (Hann, hop n_fft / 4); per scale spectral
    convergence ``||S_e - S_r||_F / sqrt(||S_r||_F^2 + ||S_floor||_F^2)`` (``S_floor``: white
    noise at -60 dB RMS) plus ``mean |ln(S_e + e) - ln(S_r + e)|`` (``e``: white noise at
    -100 dB RMS); averaged over scales. ``[B, C, T]`` each -> ``[B]`` (norms taken per example).
    """
    _check_pair(reference, estimate)
    distance = MultiScaleSTFT().to(reference.device)
    return torch.stack([distance(reference[i:i + 1], estimate[i:i + 1]) for i in range(reference.shape[0])])


def mel_distance(reference: Tensor, estimate: Tensor, sample_rate: int) -> Tensor:
    """DAC's multi-scale mel distance (``MelSpectrogramLoss`` as configured to train DAC).

    For each window length w in 32 ... 2048 with 5 ... 320 mels: magnitude STFT (periodic
    Hann of length w, n_fft w, hop w / 4, centred with reflect padding), Slaney-scale
    Slaney-normalised mel filters from 0 Hz to Nyquist (librosa's defaults), then
    ``mean |log10(max(mel_e, 1e-5)) - log10(max(mel_r, 1e-5))|`` over channels, mels and
    frames (DAC's ``pow`` 1, ``log_weight`` 1, ``mag_weight`` 0). The scales are *summed*,
    as DAC sums them, so values compare with DAC's reported mel distance. The window is
    audiotools' current default 'hann' (some older audiotools releases used sqrt-Hann).

    ``[B, C, T]`` each (T > 1024, for the reflect padding) -> ``[B]``.
    """
    _check_pair(reference, estimate)
    batch = reference.shape[0]
    ref = reference.float().reshape(-1, reference.shape[-1])  # [B * C, T]
    est = estimate.float().reshape(-1, estimate.shape[-1])    # [B * C, T]
    total = ref.new_zeros(batch)
    for window_length, n_mels in zip(MEL_WINDOW_LENGTHS, MEL_N_MELS):
        window = torch.hann_window(window_length, device=ref.device)
        filters = torchaudio.functional.melscale_fbanks(
            window_length // 2 + 1, 0.0, sample_rate / 2, n_mels, sample_rate,
            norm="slaney", mel_scale="slaney").to(ref.device)  # [F, n_mels]
        log_mels = []
        for signal in (ref, est):
            spec = torch.stft(signal, window_length, window_length // 4, window=window, center=True,
                              pad_mode="reflect", return_complex=True).abs()  # [B * C, F, frames]
            mel = torch.einsum("nft,fm->nmt", spec, filters)  # [B * C, n_mels, frames]
            log_mels.append(mel.clamp(min=MEL_CLAMP).log10())
        diff = (log_mels[1] - log_mels[0]).abs()  # [B * C, n_mels, frames]
        total = total + diff.reshape(batch, -1).mean(dim=1)
    return total


def si_sdr(reference: Tensor, estimate: Tensor) -> Tensor:
    """Scale-invariant SDR in dB (Le Roux et al. 2019), zero-mean, channels joined as in DAC.

    With ``s`` and ``e`` the mean-removed reference and estimate (all channels of an
    example as one vector) and ``a = <e, s> / <s, s>``:
    ``10 log10(||a s||^2 / ||a s - e||^2)``, capped at 120 dB. ``[B, C, T]`` -> ``[B]``.
    """
    _check_pair(reference, estimate)
    s = reference.double().reshape(reference.shape[0], -1)  # [B, C * T]
    e = estimate.double().reshape(estimate.shape[0], -1)    # [B, C * T]
    s = s - s.mean(dim=1, keepdim=True)
    e = e - e.mean(dim=1, keepdim=True)
    scale = (e * s).sum(dim=1, keepdim=True) / (s * s).sum(dim=1, keepdim=True)
    target = scale * s
    signal = target.pow(2).sum(dim=1)
    noise = (target - e).pow(2).sum(dim=1).clamp(min=signal * 10 ** (-SI_SDR_MAX_DB / 10))
    return (10 * torch.log10(signal / noise)).float()


def energy_share_db(part: Tensor, whole: Tensor) -> Tensor:
    """Energy of ``part`` relative to ``whole`` in dB: ``10 log10(sum part^2 / sum whole^2)``.

    Sums over channels and samples, floored at -200 dB (a part of exactly zero);
    ``[B, C, T]`` each -> ``[B]``. E.g. the noise branch's share of a model's output.
    """
    _check_pair(whole, part)
    return share_db(part.pow(2).flatten(1).sum(dim=1), whole.pow(2).flatten(1).sum(dim=1)).float()  # [B]


def a_weighting(frequencies: Tensor) -> Tensor:
    """A-weighting in dB (IEC 61672-1 analytic form), floored at -80 dB. Any shape -> same shape.

    ``A(f) = 20 log10(f4^2 f^4 / ((f^2 + f1^2) sqrt((f^2 + f2^2)(f^2 + f3^2)) (f^2 + f4^2))) + 2.0``
    with f1..f4 = 20.6, 107.7, 737.9, 12194 Hz.
    """
    f1, f2, f3, f4 = _A_POLES
    f_sq = frequencies.double() ** 2
    response = f4 ** 2 * f_sq ** 2 / (
        (f_sq + f1 ** 2) * torch.sqrt((f_sq + f2 ** 2) * (f_sq + f3 ** 2)) * (f_sq + f4 ** 2))
    return (20 * torch.log10(response) + _A_OFFSET_DB).clamp(min=A_WEIGHTING_MIN_DB).to(frequencies.dtype)


def loudness(audio: Tensor, sample_rate: int) -> Tensor:
    """A-weighted loudness in dB per frame, DDSP's ``compute_loudness`` (v2+ defaults).

    Resample to 16 kHz; STFT with n_fft 512 (periodic Hann), hop 64 (250 frames/s),
    centred with zero padding; power ``|X|^2`` times the A-weighting as a power ratio
    ``10^(A/10)``; mean over the 257 bins *in the power domain*; ``10 log10`` with the
    power floored at 1e-8, i.e. -80 dB (``range_db`` 80, ``ref_db`` 0, no 20.7 offset:
    that was DDSP < 2.0, which also averaged in dB). Unnormalised STFT, so a full-scale
    sine at 1 kHz reads about +20 dB. ``[B, C, T]`` -> ``[B, C, 1 + T16 // 64]`` (T16: samples at 16 kHz).
    """
    if audio.ndim != 3:
        raise ValueError(f"audio {tuple(audio.shape)}: expected [B, C, T]")
    audio = torchaudio.functional.resample(audio.float(), sample_rate, LOUDNESS_SAMPLE_RATE)
    batch, channels, _ = audio.shape
    spec = torch.stft(audio.reshape(batch * channels, -1), LOUDNESS_N_FFT, LOUDNESS_HOP,
                      window=torch.hann_window(LOUDNESS_N_FFT, device=audio.device), center=True,
                      pad_mode="constant", return_complex=True)  # [B * C, F, frames]
    frequencies = torch.fft.rfftfreq(LOUDNESS_N_FFT, 1 / LOUDNESS_SAMPLE_RATE, device=audio.device)  # [F]
    weighting = 10 ** (a_weighting(frequencies) / 10)  # [F]
    power = (spec.abs() ** 2 * weighting[:, None]).mean(dim=1)  # [B * C, frames]
    db = 10 * torch.log10(power.clamp(min=10 ** (-LOUDNESS_RANGE_DB / 10)))
    return db.reshape(batch, channels, -1)  # [B, C, frames]


def loudness_l1(reference: Tensor, estimate: Tensor, sample_rate: int) -> Tensor:
    """Mean absolute loudness difference in dB over frames and channels. ``[B, C, T]`` -> ``[B]``."""
    _check_pair(reference, estimate)
    diff = (loudness(estimate, sample_rate) - loudness(reference, sample_rate)).abs()  # [B, C, frames]
    return diff.reshape(diff.shape[0], -1).mean(dim=1)


def _torchcrepe():
    try:
        import torchcrepe
    except ImportError as error:
        raise UserError(f"pitch metrics need torchcrepe, which is not installed ({error}); "
                        f"install the extra: {PITCH_EXTRA}") from error
    return torchcrepe


def f0(audio: Tensor, sample_rate: int, model: str = "full") -> Tuple[Tensor, Tensor]:
    """Fundamental frequency and confidence with CREPE (torchcrepe's weights, shipped in its wheel).

    Channels are mixed to mono and resampled to 16 kHz; 1024-sample frames every 10 ms,
    centred (zero padding), each normalised to zero mean and unit variance. Decoding is
    CREPE's own, deterministic: the activation-weighted mean of the cents of the 9 bins
    around the most active one; confidence is that largest activation (0..1). (torchcrepe's
    decoders dither the bins randomly or smooth with Viterbi, so they are not used.)
    ``model``: 'full' (the CREPE of the papers, the default for reported numbers) or
    'tiny' (about 60 times cheaper, for quick checks and tests).

    ``[B, C, T]`` -> f0 in Hz ``[B, N]`` and confidence ``[B, N]``, N = 1 + T16 // 160.
    """
    if audio.ndim != 3:
        raise ValueError(f"audio {tuple(audio.shape)}: expected [B, C, T]")
    if model not in ("full", "tiny"):
        raise ValueError(f"CREPE model {model!r}: expected 'full' or 'tiny'")
    torchcrepe = _torchcrepe()
    mono = torchaudio.functional.resample(audio.float().mean(dim=1), sample_rate, CREPE_SAMPLE_RATE)  # [B, T16]
    device = str(mono.device)
    hz, confidence = [], []
    with torch.no_grad():
        for example in mono:
            activations = torch.cat([
                torchcrepe.infer(frames, model, device)  # [frames, 360]
                for frames in torchcrepe.preprocess(example[None], CREPE_SAMPLE_RATE, CREPE_HOP,
                                                    CREPE_FRAMES_PER_BATCH, device, pad=True)])
            cents, peak = _decode_crepe(activations)
            hz.append(10.0 * 2 ** (cents / 1200))
            confidence.append(peak)
    return torch.stack(hz), torch.stack(confidence)


def _decode_crepe(activations: Tensor) -> Tuple[Tensor, Tensor]:
    """CREPE's local weighted mean: ``[N, 360]`` activations -> cents above 10 Hz ``[N]``, peak ``[N]``."""
    n_bins = activations.shape[1]
    peak, center = activations.max(dim=1)  # [N]
    offsets = torch.arange(-CREPE_LOCAL_BINS, CREPE_LOCAL_BINS + 1, device=activations.device)
    bins = center[:, None] + offsets  # [N, 9]
    inside = (bins >= 0) & (bins < n_bins)
    weights = activations.gather(1, bins.clamp(0, n_bins - 1)) * inside  # [N, 9]
    bin_cents = CREPE_BIN0_CENTS + CREPE_CENTS_PER_BIN * bins.to(activations.dtype)  # [N, 9]
    cents = (weights * bin_cents).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-12)
    return cents, peak


class F0Scores(NamedTuple):
    """Per-example pitch errors over the frames where the reference is confidently pitched."""

    l1_cents: Tensor       # [B] mean |1200 log2(f0_e / f0_r)|; NaN without a confident frame
    rmse_cents: Tensor     # [B] root mean square of the same; NaN likewise
    outlier: Tensor        # [B] bool: l1_cents > 1200 (an octave)
    voiced_frames: Tensor  # [B] number of frames scored
    pitched: Tensor        # [B] fraction of them where the estimate is confidently pitched too; NaN likewise

    @property
    def outlier_ratio(self) -> float:
        """Fraction of outliers among the examples that have a confident frame (NaN if none)."""
        scored = self.voiced_frames > 0
        return float(self.outlier[scored].float().mean()) if bool(scored.any()) else math.nan


def f0_metrics(reference: Tensor, estimate: Tensor, sample_rate: int,
               confidence_threshold: float = 0.85, model: str = "full") -> F0Scores:
    """Pitch errors in cents, scored where the *reference* CREPE confidence >= threshold.

    Threshold 0.85 and the one-octave outlier rule follow DDSP's F0 metric
    (ddsp.training.metrics: MIN_F0_CONFIDENCE, OUTLIER_MIDI_THRESH = 12 semitones), which
    differs in three ways: it reports semitones (our cents / 100), decodes with Viterbi, and
    averages its f0 distance over non-outlier examples only (``l1_cents[~outlier]``).
    ``[B, C, T]`` each -> :class:`F0Scores` of ``[B]``.
    """
    _check_pair(reference, estimate)
    f0_ref, conf_ref = f0(reference, sample_rate, model)
    f0_est, conf_est = f0(estimate, sample_rate, model)
    return f0_scores(f0_ref, conf_ref, f0_est, confidence_threshold, conf_est)


def f0_scores(f0_reference: Tensor, confidence_reference: Tensor, f0_estimate: Tensor,
              confidence_threshold: float = 0.85, confidence_estimate: Optional[Tensor] = None) -> F0Scores:
    """:func:`f0_metrics` from pitch tracks already computed by :func:`f0` (``[B, N]`` each), so that
    one reference track can score several estimates.

    ``pitched`` is the fraction of the scored frames where the estimate's confidence reaches the
    threshold too (NaN without ``confidence_estimate``). Near 0 the estimate has no clear pitch where
    the reference has one, and the cents errors measure where CREPE guesses in noise, not an error
    of pitch: read the F0 L1 with it."""
    error = (1200 * torch.log2(f0_estimate / f0_reference)).abs()  # [B, N]
    mask = confidence_reference >= confidence_threshold             # [B, N]
    count = mask.sum(dim=1)
    l1 = (error * mask).sum(dim=1) / count               # NaN where count is 0
    rmse = ((error ** 2 * mask).sum(dim=1) / count).sqrt()
    if confidence_estimate is None:
        pitched = torch.full_like(l1, math.nan)
    else:
        pitched = ((confidence_estimate >= confidence_threshold) & mask).sum(dim=1) / count
    return F0Scores(l1, rmse, (l1 > F0_OUTLIER_CENTS) & (count > 0), count, pitched)


class MeanCI(NamedTuple):
    """A mean with the half-width of its 95 % confidence interval: ``mean ± half_width``."""

    mean: float
    half_width: float
    n: int


def mean_and_ci95(values: Union[Sequence[float], np.ndarray, Tensor]) -> MeanCI:
    """Mean and 95 % Student-t interval of per-file values (NaNs dropped, ``n`` counts the rest).

    ``half_width = t_{0.975, n-1} * s / sqrt(n)`` with ``s`` the sample standard deviation
    (ddof 1); NaN when n < 2.
    """
    array = np.asarray(values.detach().cpu() if isinstance(values, Tensor) else values, dtype=np.float64).ravel()
    array = array[~np.isnan(array)]
    n = int(array.size)
    if n == 0:
        return MeanCI(math.nan, math.nan, 0)
    if n == 1:
        return MeanCI(float(array[0]), math.nan, 1)
    half_width = stats.t.ppf(0.975, n - 1) * array.std(ddof=1) / math.sqrt(n)
    return MeanCI(float(array.mean()), float(half_width), n)


def evaluate_pair(reference: Tensor, estimate: Tensor, sample_rate: int, pitch: bool = False,
                  crepe_model: str = "full") -> Dict[str, float]:
    """Every metric for one file, ``[C, T]`` each: a flat dict of floats for a per-file report."""
    if reference.ndim != 2:
        raise ValueError(f"reference {tuple(reference.shape)}: expected one file [C, T]")
    ref, est = reference[None], estimate[None]  # [1, C, T]
    scores = {
        "mel_distance": float(mel_distance(ref, est, sample_rate)[0]),
        "multiscale_stft": float(multiscale_stft_distance(ref, est)[0]),
        "si_sdr_db": float(si_sdr(ref, est)[0]),
        "loudness_l1_db": float(loudness_l1(ref, est, sample_rate)[0]),
    }
    if pitch:
        f0_scores = f0_metrics(ref, est, sample_rate, model=crepe_model)
        scores.update({
            "f0_l1_cents": float(f0_scores.l1_cents[0]),
            "f0_rmse_cents": float(f0_scores.rmse_cents[0]),
            "f0_outlier": float(f0_scores.outlier[0]) if int(f0_scores.voiced_frames[0]) else math.nan,
            "f0_voiced_frames": float(f0_scores.voiced_frames[0]),
            "f0_pitched": float(f0_scores.pitched[0]),
        })
    return scores

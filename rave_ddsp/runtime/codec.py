"""Whole files of any length through a model in bounded memory: the codec behind the scripts.

:class:`Codec` wraps an :class:`rave_ddsp.runtime.inference.AutoEncoder` (or anything with its
``encode``/``decode``/``pad``, ``hop_length``, ``frame_rate`` and ``module``). A signal
longer than one window is cut into windows of ``window`` latent frames that overlap by
``2 * margin``; each window is run alone and only its core is kept::

    signal  |0 ........................................................... L|
    window 1 |==== core 1 ====|--m--|                          (starts at 0)
    window 2          |--m--|==== core 2 ====|--m--|
    window 3                         |--m--|=========== core 3 =========|   (ends at L)

The first window starts at 0 and the last ends at ``L``, so every window has the same
length (they batch together) and sees the same zero padding at the file's edges as a
one-call run. A core frame is at least ``margin`` frames from any cut, more than the
model's reach, so the cores equal a one-call run (float rounding aside). Signals of at
most one window run whole, batched with others of the same length.

Decoding runs the deterministic noise table (:class:`rave_ddsp.nn.noise.FilteredNoise`) from
each window's start, so chunked decoding draws the same noise as one call; windows are
batched only with windows that start at the same frame.
"""
from collections import defaultdict
from typing import Callable, Dict, List, NamedTuple, Sequence, Tuple

import torch
from torch import Tensor

from rave_ddsp.errors import UserError

MARGIN_FRAMES = 32
"""Latent frames kept on each side of a cut: more than the reach of one frame in every shipped
config (measured in ``docs/design-notes.md``), with room for deeper ones."""
BATCH_SECONDS = 60.0
"""Default audio per forward pass, which bounds memory: one window, or several short files."""


class Window(NamedTuple):
    """Frames ``[start, stop)`` run together, of which ``[keep_start, keep_stop)`` are kept."""

    start: int
    stop: int
    keep_start: int
    keep_stop: int


def plan_windows(frames: int, window: int, margin: int) -> List[Window]:
    """Windows of ``window`` frames whose kept cores tile ``[0, frames)`` (one window if it fits).

    A cut is at least ``margin`` frames from every kept frame; needs ``window > 2 * margin``.
    """
    if frames <= window:
        return [Window(0, frames, 0, frames)]
    core = window - 2 * margin
    if core < 1:
        raise ValueError(f"window {window} frames leaves no core between two margins of {margin}")
    windows = []
    for keep_start in range(0, frames, core):
        start = min(max(keep_start - margin, 0), frames - window)
        windows.append(Window(start, start + window, keep_start, min(keep_start + core, frames)))
    return windows


def noise_tables(module: torch.nn.Module) -> List[torch.nn.Module]:
    """The deterministic noise sources in a model (eager or TorchScript): modules with a noise ``table``."""
    return [m for m in module.modules() if hasattr(m, "table") and hasattr(m, "position")]


class Codec:
    """Encode, decode and reconstruct lists of signals of any length, window by window.

    ``batch_seconds`` is the audio per forward pass (memory grows with it); it must hold at
    least three margins. ``margin_frames`` overrides :data:`MARGIN_FRAMES` (tests).
    """

    def __init__(self, model, batch_seconds: float = BATCH_SECONDS, margin_frames: int = MARGIN_FRAMES):
        self.model = model
        self.margin = margin_frames
        self.window = int(batch_seconds * model.frame_rate)
        if self.window < 3 * margin_frames:
            shortest = 3 * margin_frames / model.frame_rate
            raise UserError(f"--batch-seconds {batch_seconds:g} is too short for this model: at least "
                            f"{shortest:.2f} s (three margins of {margin_frames} latent frames)")
        self.noise = noise_tables(model.module)
        self.noise_per_frame = model.hop_length // model.module.pqmf.n_bands if self.noise else 0
        """Noise-table samples per latent frame (the noise runs at the PQMF's band rate)."""

    def encode(self, audios: Sequence[Tensor]) -> List[Tensor]:
        """``[C, T]`` each -> latents ``[Z, ceil(T / hop)]`` each (PCA coordinates)."""
        padded = [self.model.pad(audio[None])[0] for audio in audios]  # [C, L * hop] each
        return self._windowed(padded, self.model.hop_length, lambda x, start: self.model.encode(x), aligned=False)

    def decode(self, latents: Sequence[Tensor]) -> List[Tensor]:
        """``[Z, L]`` each -> audio ``[C, L * hop]`` each."""
        return self._windowed(list(latents), 1, lambda x, start: self._decode_from(self.model.decode, x, start),
                              aligned=True)

    def encode_codes(self, audios: Sequence[Tensor]) -> List[Tensor]:
        """``[C, T]`` each -> integer codes ``[N, ceil(T / hop)]`` each (discrete models)."""
        padded = [self.model.pad(audio[None])[0] for audio in audios]
        return self._windowed(padded, self.model.hop_length, lambda x, start: self.model.encode_codes(x),
                              aligned=False)

    def decode_codes(self, codes: Sequence[Tensor]) -> List[Tensor]:
        """Integer codes ``[n, L]`` each (first ``n`` codebooks) -> audio ``[C, L * hop]`` each."""
        return self._windowed(list(codes), 1, lambda x, start: self._decode_from(self.model.decode_codes, x, start),
                              aligned=True)

    def reconstruct(self, audios: Sequence[Tensor]) -> List[Tensor]:
        """``[C, T]`` each -> ``[C, T]`` each: decode(encode(audio)), cropped to the input length."""
        return [out[:, : audio.shape[-1]] for audio, out in zip(audios, self.decode(self.encode(audios)))]

    def _decode_from(self, decode: Callable[[Tensor], Tensor], x: Tensor, start: int) -> Tensor:
        """``decode(x)`` (latents or codes ``[B, D, L]`` -> ``[B, C, L * hop]``) with the noise table
        read from latent frame ``start`` on."""
        saved = [source.position.clone() for source in self.noise]
        for source in self.noise:
            source.position.fill_(start * self.noise_per_frame)
        try:
            return decode(x)
        finally:
            for source, position in zip(self.noise, saved):
                source.position.copy_(position)

    def _windowed(self, signals: List[Tensor], per_frame: int, function: Callable[[Tensor, int], Tensor],
                  aligned: bool) -> List[Tensor]:
        """Run ``function(batch [B, D, n * per_frame], first frame) -> [B, D', n * out_per_frame]`` window by window.

        ``signals`` are ``[D, L * per_frame]``; windows of equal length (and, if ``aligned``,
        equal start) share a forward pass, at most ``self.window`` frames in all.
        """
        groups: Dict[Tuple[int, int], List[Tuple[int, Window]]] = defaultdict(list)
        for index, signal in enumerate(signals):
            for window in plan_windows(signal.shape[-1] // per_frame, self.window, self.margin):
                groups[window.stop - window.start, window.start if aligned else 0].append((index, window))
        pieces: List[List[Tuple[int, Tensor]]] = [[] for _ in signals]
        for (length, _), jobs in groups.items():
            per_batch = max(1, self.window // length)
            for first in range(0, len(jobs), per_batch):
                batch = jobs[first:first + per_batch]
                x = torch.stack([signals[i][:, w.start * per_frame:w.stop * per_frame] for i, w in batch])  # [B, D, n]
                y = function(x, batch[0][1].start)  # [B, D', n']
                out_per_frame = y.shape[-1] // length
                for (i, w), row in zip(batch, y):
                    keep = row[:, (w.keep_start - w.start) * out_per_frame:(w.keep_stop - w.start) * out_per_frame]
                    pieces[i].append((w.keep_start, keep))
        return [torch.cat([piece for _, piece in sorted(parts, key=lambda p: p[0])], dim=-1) for parts in pieces]

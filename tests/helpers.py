"""Helpers shared by tests in every folder: the tiny model, its training, audio and script runners.

(Fixtures live in conftest.py; this module holds plain functions and constants.)
"""
import importlib.util
from pathlib import Path

import lightning as L
import numpy as np
import soundfile
import torch
from torch.utils.data import DataLoader

from rave_ddsp.train.model import RAVE

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(sample_rate=16000, n_bands=4, latent_size=6, hidden_channels=(8, 16, 16), ratios=(4, 2), dilations=(1, 3),
            noise_ratios=(2, 2), full_band_ffts=(256, 64), band_ffts=(32,), discriminators=("multi_scale",),
            discriminator_capacity_scale=0.0625)
HOP = 32


def train_checkpoint(folder: Path, **overrides) -> Path:
    """Two training steps and a validation (which fills the PCA), saved as a checkpoint."""
    torch.manual_seed(0)
    model = RAVE(**{**TINY, **overrides})
    channels = overrides.get("channels", 1)
    audio = [0.3 * torch.sin(torch.linspace(0, 100 * (i + 1), 64 * HOP)).repeat(channels, 1) for i in range(4)]
    trainer = L.Trainer(max_steps=2, logger=False, enable_progress_bar=False, enable_model_summary=False,
                        accelerator="cpu", default_root_dir=folder, num_sanity_val_steps=0, val_check_interval=1,
                        check_val_every_n_epoch=None, enable_checkpointing=False)
    trainer.fit(model, DataLoader(audio, batch_size=2), DataLoader(audio, batch_size=2))
    path = folder / "checkpoints" / "last.ckpt"
    path.parent.mkdir(parents=True)
    trainer.save_checkpoint(path)
    return path


def assert_streams_as_one_call_delayed(streaming: Path, offline: Path, audio: torch.Tensor, delay: int, chunk: int,
                                       settle: int):
    """Buffer-by-buffer (``chunk`` samples) ``forward`` of the streaming export equals the offline export's one
    call on ``audio [1, C, T]``, ``delay`` samples later, once ``settle`` samples have passed; returns both
    outputs ``(streamed, one_call)``."""
    stream, reference = torch.jit.load(str(streaming)), torch.jit.load(str(offline))
    with torch.no_grad():
        streamed = torch.cat([stream.forward(c) for c in audio.split(chunk, -1)], -1)
        one_call = reference.forward(audio)
    expected = one_call[..., settle:one_call.shape[-1] - delay]
    error = streamed[..., delay + settle:] - expected
    assert float(error.pow(2).mean() / expected.pow(2).mean()) < 1e-8
    return streamed, one_call


def write_tone(path: Path, seconds: float, rate: int, channels: int = 1, frequency: float = 440.0) -> np.ndarray:
    """A decaying harmonic tone with a little noise, ``[T, channels]``, written with soundfile."""
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(int(frequency))
    tone = np.sin(2 * np.pi * frequency * t) + 0.3 * np.sin(6 * np.pi * frequency * t)
    tone += 0.05 * rng.standard_normal(t.size)
    audio = 0.4 * np.exp(-t)[:, None] * tone[:, None] * np.linspace(1.0, 0.5, channels)[None]
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(path), audio, rate)
    return audio


def run_script(name: str, args, capsys):
    """``scripts/<name>.py``'s main(args) in this process: ``(exit code, captured output)``."""
    spec = importlib.util.spec_from_file_location(f"script_{name}", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    code = module.main([str(a) for a in args])
    return code, capsys.readouterr()

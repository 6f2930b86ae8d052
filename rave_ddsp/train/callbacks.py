"""Training callbacks: TensorBoard media, checkpoint on Ctrl-C, before/after report."""
from pathlib import Path
from typing import Optional

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from rave_ddsp.plots import plt, spectrogram_panels
from rave_ddsp.dsp.filtered_noise import share_db
from rave_ddsp.nn.quantizer import usage_statistics
from rave_ddsp.train.model import noise_shares_db


class MediaLogger(L.Callback):
    """At each validation: original vs reconstructed audio and spectrograms, latent statistics.

    Reads what :class:`rave_ddsp.train.model.RAVE` keeps from its validation pass
    (``validation_examples``, ``validation_kl``, ``latent_fidelity``).
    """

    def on_validation_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        # after the module's on_validation_epoch_end, which updates the latent statistics
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        loggers = [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]
        if not loggers or not module.validation_examples:
            return
        writer, step = loggers[0].experiment, trainer.global_step
        sample_rate = module.hparams.sample_rate
        original = module.validation_examples["audio"]  # [B, C, T]
        reconstruction = module.validation_examples["reconstruction"]  # [B, C, T]
        noise = module.validation_examples["noise"]  # [B, C, T]: the noise branch's part of the reconstruction
        for i in range(original.shape[0]):
            panels = torch.stack([original[i, 0], reconstruction[i, 0], noise[i, 0]])  # [3, T]
            writer.add_audio(f"audio/{i}_original", panels[0:1].T.clamp(-1, 1), step, sample_rate)
            writer.add_audio(f"audio/{i}_reconstruction", panels[1:2].T.clamp(-1, 1), step, sample_rate)
            share = float(share_db(noise[i].pow(2).sum(), reconstruction[i].pow(2).sum()))
            figure = spectrogram_panels(panels.numpy(), ["original", "reconstruction",
                                                         f"noise branch ({share:.1f} dB of the output)"], sample_rate)
            writer.add_figure(f"spectrogram/{i}", figure, step)
        writer.add_figure("noise/share_per_band", self.share_figure(module), step)
        figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5), layout="constrained")
        if module.discrete:
            perplexity, used = usage_statistics(module.validation_codes)
            left.bar(np.arange(len(perplexity)), perplexity.numpy() / module.hparams.codebook_size,
                     label="perplexity / size")
            left.plot(np.arange(len(used)), used.numpy(), "k.", label="entries used")
            left.set(title="codebook usage (validation)", xlabel="codebook", ylim=(0, 1.01))
            left.legend()
        else:
            kl = (module.validation_kl / max(1.0, float(module.latent_statistics.count))).numpy()  # per frame
            left.bar(np.arange(len(kl)), np.sort(kl)[::-1])
            left.set(title="KL per latent dimension (sorted)", xlabel="dimension", ylabel="nats")
        fidelity = module.latent_fidelity.cpu().numpy()
        right.plot(np.arange(1, len(fidelity) + 1), fidelity)
        right.set(title="fidelity (explained variance)", xlabel="PCA dimensions kept", ylim=(0, 1.01))
        right.grid(True)
        writer.add_figure("latent/statistics", figure, step)
        plt.close("all")


    @staticmethod
    def share_figure(module: L.LightningModule):
        """The noise branch's share of the output energy per PQMF band (validation set) and over time
        (first validation example, per band sample block of one latent frame)."""
        shares = noise_shares_db(module.validation_noise_energy, module.validation_output_energy,
                                 module.hparams.n_bands)
        per_band = [shares[f"share_db_band_{b:02d}"] for b in range(module.hparams.n_bands)]
        figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5), layout="constrained")
        left.bar(np.arange(len(per_band)), per_band, bottom=0)
        left.set(title=f"noise share per band (all: {shares['share_db']:.1f} dB)", xlabel="PQMF band",
                 ylabel="dB of the band's output")
        noise = module.validation_examples["noise"][0].pow(2).sum(0)  # [T]
        total = module.validation_examples["reconstruction"][0].pow(2).sum(0)
        hop = module.hop_length
        frames = noise.shape[-1] // hop
        noise_frames = noise[: frames * hop].reshape(frames, hop).sum(-1)
        total_frames = total[: frames * hop].reshape(frames, hop).sum(-1)
        right.plot(np.arange(frames) * hop / module.hparams.sample_rate, share_db(noise_frames, total_frames).numpy())
        right.set(title="noise share over time (example 0)", xlabel="s", ylabel="dB of the output")
        right.grid(True)
        return figure


class InterruptCheckpoint(L.Callback):
    """Keep ``last.ckpt`` at the latest step: on Ctrl-C, and when training ends between the
    periodic checkpoints (ModelCheckpoint writes it only at those), so ``--ckpt_path last``
    and the export always take the final state. A run stopped by an error saves nothing: its
    last checkpoint stays the last good one."""

    def __init__(self, dirpath: str):
        self.path = Path(dirpath) / "last.ckpt"

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.global_step > 0:
            trainer.save_checkpoint(str(self.path))

    def on_exception(self, trainer: L.Trainer, module: L.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, KeyboardInterrupt) and trainer.global_step > 0:
            trainer.save_checkpoint(str(self.path))
            print(interrupted_message(trainer.global_step, self.path))


def interrupted_message(step: int, path: Path) -> str:
    return f"\ninterrupted at step {step}: saved {path}; resume with --ckpt_path last (and the run's config.yaml)"


class ReconstructionReport(L.Callback):
    """Print the validation spectral distance before and after training (the main job's proof)."""

    def __init__(self) -> None:
        self.before: Optional[float] = None
        self.start_step = 0

    def distance(self, trainer: L.Trainer, module: L.LightningModule) -> float:
        loader = trainer.datamodule.val_dataloader()
        total, count = 0.0, 0
        was_training = module.training
        module.eval()
        with torch.no_grad():
            for audio in loader:
                audio = audio.to(module.device)
                bands, mean, _ = module.encode(audio)
                terms = module.spectral_loss(audio, bands, *module.decoder.branches(mean))
                total += float(terms["spectral"]) * len(audio)
                count += len(audio)
        module.train(was_training)
        return total / max(1, count)

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            self.before = self.distance(trainer, module)
            self.start_step = trainer.global_step

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.is_global_zero and self.before is not None:
            after = self.distance(trainer, module)
            print(f"validation spectral distance: {self.before:.3f} at step {self.start_step} -> {after:.3f} "
                  f"after step {trainer.global_step} ({100 * (after - self.before) / self.before:+.1f} %)")

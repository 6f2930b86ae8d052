"""Explore a trained model's latent space: PCA, sweeps, interpolations, random walks, prior samples, plots.

    python scripts/explore.py pca         --model RUN_OR_TS INPUT [INPUT ...] --output DIR
    python scripts/explore.py sweep       --model RUN_OR_TS FILE --output DIR [--dims 4 --range 2 --steps 5]
    python scripts/explore.py interpolate --model RUN_OR_TS FILE_A FILE_B --output DIR [--steps 5 --spherical]
    python scripts/explore.py walk        --model RUN_OR_TS --output DIR [--seconds 8 --step 0.5 --tau 2 --start FILE]
    python scripts/explore.py sample      --model RUN_OR_TS --output DIR [--seconds 8 --smooth 0.1 --count 1]
    python scripts/explore.py plot        --model RUN_OR_TS FILE --output DIR [--dims 4 --pitch]

--model takes a run folder, a checkpoint or a non-streaming .ts export. Latents are the
model's PCA coordinates (dimension 0 varies most in the training data). Audio is written
as 32-bit float WAV at the model's rate, figures as PNG; every file written is listed.
plot draws the file, its reconstruction and the reconstruction's filtered-noise branch alone
(its energy share in dB in the title; left out for a model without noise_level).
A discrete model (configs/discrete.yaml) is explored through its quantized latent: encodings
land on its codes, while sweeps, walks and prior samples move freely between them (the
decoder was trained on the codes only, and such a model has no N(0, I) prior).
"""
import argparse
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional, Sequence

import torch

from rave_ddsp.analysis import explore as ex
from rave_ddsp.analysis import figures
from rave_ddsp.analysis import metrics
from rave_ddsp.files import save_figure, write_json
from rave_ddsp.runtime.jobs import add_precision_option, write_audio
from rave_ddsp.errors import UserError, script_main
from rave_ddsp.runtime.inference import AutoEncoder, load
from rave_ddsp.plots import plt, spectrogram_panels

DEFAULT_PLOTTED_DIMS = 4
VOICED_CONFIDENCE = 0.5
"""F0 frames with a lower CREPE confidence are not drawn."""


def save(fig, path: Path) -> None:
    save_figure(fig, path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}")


def mono(audio: torch.Tensor):
    """``[C, T]`` tensor -> ``[T]`` numpy mix (for spectrograms)."""
    return audio.mean(0).numpy()


def run_pca(model: AutoEncoder, args) -> None:
    report, skipped = ex.latent_pca(model, args.inputs, progress=not args.quiet)
    for line in skipped:
        print(f"skipped {line}", file=sys.stderr)
    print(report.describe())
    if model.fidelity is not None:
        print("note: latents are already in the model's PCA coordinates: on data like the training data, "
              "the model coordinates' curve follows the data PCA's")
    json_path = args.output / "pca.json"
    write_json(json_path, {"model": str(model.source), **report.to_dict()})
    print(f"wrote {json_path}")
    title = f"latent PCA of {report.files} file(s), {report.frames} frames ({model.source.name})"
    save(figures.pca_figure(report, title), args.output / "pca.png")


def run_sweep(model: AutoEncoder, args) -> None:
    dims = ex.check_dims(model, min(DEFAULT_PLOTTED_DIMS, model.latent_size) if args.dims is None else args.dims)
    if args.steps < 2 or not args.range > 0:
        raise UserError(f"--steps {args.steps} --range {args.range}: expected at least 2 steps and a positive range")
    audio, latent = ex.encode_file(model, args.file)
    offsets = torch.linspace(-args.range, args.range, args.steps)
    print("offsets: " + ", ".join(f"step {i}: {o:+.3f}" for i, o in enumerate(offsets.tolist())))
    swept = ex.sweep(model, latent, dims, offsets, audio.shape[-1], progress=not args.quiet)  # [dims, N, C, T]
    for d in range(dims):
        for i in range(args.steps):
            path = args.output / f"sweep_dim{d}_step{i}.wav"
            write_audio(path, swept[d, i], model.sample_rate, "wav")
            print(f"wrote {path} (dim {d} {float(offsets[i]):+.3f})")
    signals = [[mono(swept[d, i]) for i in range(args.steps)] for d in range(dims)]
    save(figures.spectrogram_grid(signals, [f"dim {d}" for d in range(dims)], [f"{o:+.2f}" for o in offsets.tolist()],
                                  model.sample_rate, f"{args.file.name}: each dimension swept (offset added)"),
         args.output / "sweep.png")


def run_interpolate(model: AutoEncoder, args) -> None:
    if args.steps < 2:
        raise UserError(f"--steps {args.steps}: expected at least 2 (the two endpoints)")
    audio_a, latent_a = ex.encode_file(model, args.files[0])
    audio_b, latent_b = ex.encode_file(model, args.files[1])
    frames = min(latent_a.shape[-1], latent_b.shape[-1])
    samples = min(audio_a.shape[-1], audio_b.shape[-1])
    weights, audio = ex.interpolation(model, latent_a[:, :frames], latent_b[:, :frames], args.steps, args.spherical,
                                      samples, progress=not args.quiet)
    for i in range(args.steps):
        path = args.output / f"interpolate_step{i}.wav"
        write_audio(path, audio[i], model.sample_rate, "wav")
        print(f"wrote {path} (weight {float(weights[i]):.3f})")
    kind = "spherical" if args.spherical else "linear"
    titles = [f"step {i}: weight {float(w):.2f}" for i, w in enumerate(weights)]
    save(spectrogram_panels([mono(a) for a in audio], titles, model.sample_rate,
                            suptitle=f"{kind} interpolation {args.files[0].name} -> {args.files[1].name}"),
         args.output / "interpolate.png")


def run_walk(model: AutoEncoder, args) -> None:
    dims = ex.check_dims(model, args.dims)
    frames, samples = ex.frames_for(model, args.seconds)
    start = None if args.start is None else ex.encode_file(model, args.start)[1].mean(-1)  # [Z]
    step = args.step / model.frame_rate ** 0.5  # per frame: a free walk spreads by --step in one second
    generator = torch.Generator().manual_seed(args.seed)
    latent = ex.random_walk(model, frames, step, args.tau, dims, start, generator)  # [Z, L]
    decay = ex.walk_decay(args.tau, model.frame_rate)
    spread = step / (1 - decay ** 2) ** 0.5 if decay < 1 else float("inf")
    print(f"walk: {dims} of {model.latent_size} dimensions, {frames} frames, step {step:.4f} per frame, "
          f"settles to a spread (std) of {spread:.3f} around the {'start' if start is not None else 'data mean'}")
    audio = ex.render(model, latent, samples)
    path = args.output / "walk.wav"
    write_audio(path, audio, model.sample_rate, "wav")
    print(f"wrote {path}")
    save(figures.trajectory_figure(latent.numpy(), mono(audio), model.sample_rate, model.frame_rate, dims,
                                   f"random walk (tau {args.tau} s, step {args.step}/s, seed {args.seed})"),
         args.output / "walk.png")


def run_sample(model: AutoEncoder, args) -> None:
    dims = ex.check_dims(model, args.dims)
    if args.count < 1:
        raise UserError(f"--count {args.count}: expected at least 1")
    frames, samples = ex.frames_for(model, args.seconds)
    generator = torch.Generator().manual_seed(args.seed)
    latents = ex.prior_samples(model, args.count, frames, args.smooth, args.temperature, dims, generator)
    mean = ex.model_prior_mean(model)
    print(f"prior in PCA coordinates: N(-R mu, I), |R mu| = {float(mean.norm()):.3f}; "
          f"{dims} of {model.latent_size} dimensions drawn, smoothed over {args.smooth} s")
    for i, latent in enumerate(latents):
        audio = ex.render(model, latent, samples)
        path = args.output / f"sample_{i}.wav"
        write_audio(path, audio, model.sample_rate, "wav")
        print(f"wrote {path}")
        save(figures.trajectory_figure(latent.numpy(), mono(audio), model.sample_rate, model.frame_rate, dims,
                                       f"prior sample {i} (temperature {args.temperature}, smoothing {args.smooth} s, "
                                       f"seed {args.seed})"),
             args.output / f"sample_{i}.png")


def run_plot(model: AutoEncoder, args) -> None:
    dims = ex.check_dims(model, min(DEFAULT_PLOTTED_DIMS, model.latent_size) if args.dims is None else args.dims)
    audio, latent = ex.encode_file(model, args.file)
    reconstruction, noise = ex.split_noise(model, latent, audio.shape[-1])  # [C, T] each
    spectrograms = [(mono(audio), "input"), (mono(reconstruction), "reconstruction")]
    if noise is None:
        print(f"note: {model.source.name} has no noise_level (not a rave_ddsp export): no noise-branch panel")
    else:
        share = float(metrics.energy_share_db(noise[None], reconstruction[None])[0])
        spectrograms.append((mono(noise), f"noise branch of the reconstruction: {share:.1f} dB of its energy"))
    loud = metrics.loudness(audio[None], model.sample_rate)[0].mean(0)  # [N], channels averaged
    loud_times = torch.arange(loud.numel()) * metrics.LOUDNESS_HOP / metrics.LOUDNESS_SAMPLE_RATE
    pitch = None
    if args.pitch:
        hz, confidence = metrics.f0(audio[None].to(model.device), model.sample_rate, args.crepe)  # [1, N] each
        hz = torch.where(confidence[0] >= VOICED_CONFIDENCE, hz[0], torch.nan).cpu()
        pitch = ((torch.arange(hz.numel()) * metrics.CREPE_HOP / metrics.CREPE_SAMPLE_RATE).numpy(), hz.numpy())
    fig = figures.analysis_figure(spectrograms, model.sample_rate, latent.numpy(), model.frame_rate, dims,
                                  (loud_times.numpy(), loud.numpy()), pitch, f"{args.file.name} ({model.source.name})")
    save(fig, args.output / f"plot_{args.file.stem}.png")


def parser() -> argparse.ArgumentParser:
    shared = argparse.ArgumentParser(add_help=False)
    shared.add_argument("--model", type=Path, required=True, help="run folder, checkpoint or non-streaming .ts")
    shared.add_argument("--output", type=Path, required=True, help="folder for the audio and figures (created)")
    shared.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    add_precision_option(shared)
    shared.add_argument("--seed", type=int, default=0, help="random seed (walk, sample)")
    shared.add_argument("--dims", type=int, help="the first K latent dimensions (default: 4 to sweep and plot, "
                                                 "all to walk and sample)")
    shared.add_argument("--quiet", action="store_true", help="no progress bars")
    top = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    pca = commands.add_parser("pca", parents=[shared], help="PCA of a data set's latents, fidelity sizes")
    pca.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help="audio files or folders")
    pca.set_defaults(run=run_pca)
    sweep = commands.add_parser("sweep", parents=[shared], help="move each dimension across a range")
    sweep.add_argument("file", type=Path)
    sweep.add_argument("--range", type=float, default=2.0, help="offsets from -R to +R are added (default 2)")
    sweep.add_argument("--steps", type=int, default=5, help="offsets per dimension (default 5)")
    sweep.set_defaults(run=run_sweep)
    interp = commands.add_parser("interpolate", parents=[shared], help="interpolate between two sounds")
    interp.add_argument("files", nargs=2, type=Path, metavar="FILE")
    interp.add_argument("--steps", type=int, default=5, help="points from A to B, endpoints included (default 5)")
    interp.add_argument("--spherical", action="store_true", help="slerp about the latent mean instead of lerp")
    interp.set_defaults(run=run_interpolate)
    walk = commands.add_parser("walk", parents=[shared], help="an Ornstein-Uhlenbeck random walk")
    walk.add_argument("--seconds", type=float, default=8.0, help="duration (default 8)")
    walk.add_argument("--step", type=float, default=0.5,
                      help="spread of a free walk after one second, in latent units (default 0.5)")
    walk.add_argument("--tau", type=float, default=2.0,
                      help="seconds to fall back towards the start (default 2; inf: a free walk)")
    walk.add_argument("--start", type=Path, help="start from this file's mean latent (default: the data mean)")
    walk.set_defaults(run=run_walk)
    sample = commands.add_parser("sample", parents=[shared], help="draw from the prior N(0, I)")
    sample.add_argument("--seconds", type=float, default=8.0, help="duration (default 8)")
    sample.add_argument("--smooth", type=float, default=0.1, help="Gaussian smoothing std in seconds (default 0.1)")
    sample.add_argument("--temperature", type=float, default=1.0, help="prior std multiplier (default 1)")
    sample.add_argument("--count", type=int, default=1, help="number of samples (default 1)")
    sample.set_defaults(run=run_sample)
    plot = commands.add_parser("plot", parents=[shared], help="spectrograms (file, reconstruction, noise branch), "
                               "latents, loudness (and F0) of a file")
    plot.add_argument("file", type=Path)
    plot.add_argument("--pitch", action="store_true", help="add the CREPE F0 track")
    plot.add_argument("--crepe", choices=("tiny", "full"), default="tiny", help="CREPE model (default tiny)")
    plot.set_defaults(run=run_plot)
    return top


@script_main
def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parser().parse_args(argv)
    try:
        device = torch.device(args.device)
    except RuntimeError:
        raise UserError(f"--device {args.device!r}: not a torch device (cpu, cuda, cuda:1, mps)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {args.device}: CUDA is not available here")
    torch.manual_seed(args.seed)
    model = load(args.model, device, args.precision)
    if args.output.exists() and not args.output.is_dir():
        raise UserError(f"--output {args.output}: exists and is not a folder")
    with output_folder(args.output):
        args.run(model, args)
    return 0


@contextmanager
def output_folder(path: Path) -> Iterator[None]:
    """Create ``path`` (and missing parents) for the run; remove those left empty if the run fails."""
    created = [p for p in (path, *path.parents) if not p.exists()]  # deepest first
    path.mkdir(parents=True, exist_ok=True)
    try:
        yield
    except BaseException:
        for folder in created:
            if any(folder.iterdir()):
                break
            folder.rmdir()
        raise


if __name__ == "__main__":
    sys.exit(main())

"""scripts/train.py: every shipped config, run folders, resume, bad input, Ctrl-C, DDP."""
import re
import shutil
import signal
import subprocess
import time
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import soundfile as sf
import torch

import rave_ddsp.train.cli
from rave_ddsp.train.cli import TrainingCLI
from rave_ddsp.train.model import RAVE

from helpers import ROOT  # noqa: E402
TRAIN = ROOT / "scripts" / "train.py"
sys.path.insert(0, str(TRAIN.parent))
import train  # noqa: E402  (scripts/train.py: its main() is what users run)

QUICK = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
         "--data.num_workers", "0", "--data.demo_seconds", "4", "--data.max_val_items", "2"]


def demo_args(tmp_path: Path, *extra: str, steps: int = 2) -> list:
    return ["--config", str(ROOT / "configs" / "demo.yaml"), "--name", "run", "--runs_root", str(tmp_path),
            "--trainer.max_steps", str(steps), "--trainer.val_check_interval", "1", "--data.n_signal", "4096",
            "--data.batch_size", "2", "--checkpoint_every", "1", *QUICK, *extra]


def run_main(args, monkeypatch, capsys):
    """scripts/train.py's main() in this process: its exit status (0 when it returns) and output."""
    monkeypatch.setattr(sys, "argv", ["train.py", *args])
    try:
        code = train.main()
    except SystemExit as exit_info:  # the argument parser exits by itself (--help, bad options)
        code = exit_info.code
    return code, capsys.readouterr()


@pytest.mark.slow
@pytest.mark.parametrize("configs,hop", [(["demo"], 256), (["small"], 1024), (["v2"], 2048),
                                          (["small", "causal"], 1024), (["small", "discrete"], 1024),
                                          (["live"], 128)],
                         ids=["demo", "small", "v2", "small+causal", "small+discrete", "live"])
def test_every_shipped_config_parses_and_trains_a_step(configs, hop, tmp_path):
    config_args = [arg for name in configs for arg in ("--config", str(ROOT / "configs" / f"{name}.yaml"))]
    cli = TrainingCLI(args=[*config_args, "--name", "run", "--runs_root", str(tmp_path), "--trainer.max_steps", "1",
                            "--trainer.val_check_interval", "1", "--trainer.limit_val_batches", "1",
                            "--data.batch_size", "1", "--data.n_signal", str(max(8 * hop, 2048)),
                            "--trainer.accelerator", "cpu",
                            *QUICK])
    cli.fit()
    run = tmp_path / "run"
    assert cli.trainer.global_step == 1
    assert cli.model.hparams.causal == ("causal" in configs or "live" in configs)
    assert cli.model.discrete == ("discrete" in configs)
    assert (run / "config.yaml").is_file() and (run / "checkpoints" / "last.ckpt").is_file()
    assert list(run.glob("events.out.tfevents.*"))
    assert np.isfinite(cli.trainer.callback_metrics["validation/spectral"].item())


def test_tensorboard_gets_losses_rates_norms_audio_and_images(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    TrainingCLI(args=demo_args(tmp_path, "--model.phase2_step", "1", "--trainer.log_every_n_steps", "1")).fit()
    events = EventAccumulator(str(next((tmp_path / "run").glob("events.out.tfevents.*"))),
                              size_guidance={"images": 0, "audio": 0, "scalars": 0})
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    for tag in ("train/spectral", "train/full_band", "train/bands", "train/kl", "train/beta", "train/loss",
                "train/adversarial", "train/feature_matching", "train/discriminator", "lr/generator",
                "lr/discriminator", "train/grad_norm_generator", "train/grad_norm_discriminator",
                "validation/spectral", "latent/dimensions_for_fidelity_0.95", "noise/share_db", "noise/share_db_band_00"):
        assert tag in scalars, tag
    assert {"spectrogram/0", "latent/statistics", "noise/share_per_band"} <= set(events.Tags()["images"])
    assert {"audio/0_original", "audio/0_reconstruction"} <= set(events.Tags()["audio"])


def test_every_config_file_is_tested():
    tested = {"demo", "small", "v2", "causal", "discrete", "live"}
    assert {path.stem for path in (ROOT / "configs").glob("*.yaml")} == tested


def test_discrete_training_prints_its_bitrate_and_logs_codebook_usage(tmp_path, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    TrainingCLI(args=demo_args(tmp_path, "--config", str(ROOT / "configs" / "discrete.yaml"), "--model.phase2_step",
                               "1", "--trainer.log_every_n_steps", "1")).fit()
    # demo: 22050 Hz, hop 256 -> 86.13 frames/s, 8 codebooks x 10 bits
    assert ("discrete codes: 8 codebooks x 10 bits at 86.13 frames/s = 6.89 kbps (0.86 kbps per codebook)"
            in capsys.readouterr().out)
    events = EventAccumulator(str(next((tmp_path / "run").glob("events.out.tfevents.*"))),
                              size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    for tag in ("train/commitment", "train/codebook", "codebook/perplexity_00", "codebook/usage_07",
                "codebook/perplexity_over_size", "train/adversarial"):
        assert tag in scalars, tag
    assert "train/kl" not in scalars
    perplexity = events.Scalars("codebook/perplexity_00")[-1].value
    assert 1.0 <= perplexity <= 1024
    assert "latent/statistics" in events.Tags()["images"]


def test_print_config_works(capsys):
    with pytest.raises(SystemExit) as exit_info:
        TrainingCLI(args=["--config", str(ROOT / "configs" / "demo.yaml"), "--print_config"])
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    assert "sample_rate: 22050" in printed and "path: builtin:demo" in printed


def test_resume_continues_step_optimizer_and_phase(tmp_path, capsys):
    TrainingCLI(args=demo_args(tmp_path, "--model.phase2_step", "3", steps=2)).fit()
    assert re.search(r"validation spectral distance: \d+\.\d{3} at step 0 -> \d+\.\d{3} after step 2 \([+-]\d+\.\d %\)",
                     capsys.readouterr().out)
    run = tmp_path / "run"
    first = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert first["global_step"] == 2
    resumed = TrainingCLI(args=["--config", str(run / "config.yaml"), "--ckpt_path", "last",
                                "--trainer.max_steps", "4"])
    resumed.fit()
    assert "at step 2 -> " in capsys.readouterr().out  # the report measures this run's own start
    last = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert last["global_step"] == 4
    generator_state = last["optimizer_states"][0]["state"]
    steps = sorted({int(state["step"]) for state in generator_state.values()})
    assert steps == [3, 4]  # the decoder saw all 4 updates, the frozen encoder only phase 1's 3
    discriminator_state = last["optimizer_states"][1]["state"]
    assert int(next(iter(discriminator_state.values()))["step"]) == 1  # phase 2 began at step 3
    assert resumed.model.in_phase2()


def test_resume_without_checkpoint_is_a_clear_error(tmp_path, monkeypatch, capsys):
    code, out = run_main(demo_args(tmp_path, "--ckpt_path", "last"), monkeypatch, capsys)
    assert code == 2
    assert "no checkpoint at" in out.err and "last.ckpt" in out.err and "Traceback" not in out.err


@pytest.mark.parametrize("path,message", [("does/not/exist", "does/not/exist"), ("EMPTY", "no")],
                         ids=["missing", "empty-folder"])
def test_bad_data_path_is_a_clear_error(path, message, tmp_path, monkeypatch, capsys):
    if path == "EMPTY":
        path = str(tmp_path / "empty")
        Path(path).mkdir()
    code, out = run_main(demo_args(tmp_path, "--data.path", path), monkeypatch, capsys)
    assert code == 2
    assert message in out.err and path in out.err and "Traceback" not in out.err
    assert not (tmp_path / "run").exists()  # a run that fails before its first checkpoint leaves nothing


def test_config_key_typo_names_the_key(tmp_path, monkeypatch, capsys):
    code, out = run_main(demo_args(tmp_path, "--model.latnet_size", "4"), monkeypatch, capsys)
    assert code == 2 and "latnet_size" in out.err


def test_sample_rate_mismatch_is_a_clear_error(tmp_path, monkeypatch, capsys):
    from rave_ddsp.data.store import preprocess

    audio_dir = tmp_path / "audio"
    audio_dir.mkdir()
    sf.write(audio_dir / "a.wav", 0.1 * np.random.default_rng(0).standard_normal(16000 * 3), 16000)
    preprocess([audio_dir], tmp_path / "db", sample_rate=16000, channels=1, progress=False)
    code, out = run_main(demo_args(tmp_path, "--data.path", str(tmp_path / "db")), monkeypatch, capsys)
    assert code == 2
    assert "16000" in out.err and "22050" in out.err and "Traceback" not in out.err


def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, capsys):
    real = RAVE.spectral_loss

    def poisoned(self, *args):
        terms = real(self, *args)
        if self.global_step == 2 and self.training:
            terms["spectral"] = terms["spectral"] * float("nan")
        return terms

    monkeypatch.setattr(RAVE, "spectral_loss", poisoned)
    code, out = run_main(demo_args(tmp_path, steps=5), monkeypatch, capsys)
    assert code == 2
    assert "at step 2" in out.err and "nan" in out.err and "Traceback" not in out.err
    checkpoint = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert checkpoint["global_step"] == 2
    assert all(torch.isfinite(v).all() for v in checkpoint["state_dict"].values() if v.is_floating_point())


def test_ctrl_c_saves_a_resumable_checkpoint(tmp_path, monkeypatch, capsys):
    class PressCtrlC(L.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_index):
            if trainer.global_step == 3:
                raise KeyboardInterrupt

    monkeypatch.setattr(rave_ddsp.train.cli, "ReconstructionReport", PressCtrlC)  # one of the CLI's own callbacks
    args = demo_args(tmp_path, "--checkpoint_every", "100", steps=10)
    code, out = run_main(args, monkeypatch, capsys)
    assert code == 1
    assert "interrupted at step 3" in out.out
    checkpoint = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert checkpoint["global_step"] == 3
    monkeypatch.undo()
    resumed = TrainingCLI(args=["--config", str(tmp_path / "run" / "config.yaml"), "--ckpt_path", "last",
                                "--trainer.max_steps", "5"])
    resumed.fit()
    assert resumed.trainer.global_step == 5


@pytest.mark.slow
def test_ddp_with_two_cpu_processes(tmp_path):
    args = demo_args(tmp_path, "--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu")
    result = subprocess.run([sys.executable, str(TRAIN), *args], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    checkpoint = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert checkpoint["global_step"] == 2


def checkpoint_step(path: Path) -> int:
    return torch.load(path, map_location="cpu", weights_only=False)["global_step"]


def folder_state(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): (p.stat().st_mtime_ns, p.read_bytes()) for p in folder.rglob("*")
            if p.is_file()}


@pytest.mark.slow
def test_resume_after_sigint_always_writes_last_ckpt(tmp_path):
    """The user's sequence: train, Ctrl-C (a real SIGINT), resume twice, then resume a copy of the run."""
    args = demo_args(tmp_path, "--checkpoint_every", "5", "--trainer.val_check_interval", "1000", steps=100000)
    process = subprocess.Popen([sys.executable, str(TRAIN), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, cwd=ROOT)
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 300
    while not last.exists():  # the first periodic checkpoint: training is under way
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()[1][-3000:]
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 1, err[-3000:]
    stopped = int(re.search(r"interrupted at step (\d+)", out).group(1))
    assert stopped >= 5 and checkpoint_step(last) == stopped
    for target in (stopped + 2, stopped + 4):
        TrainingCLI(args=["--config", str(tmp_path / "run" / "config.yaml"), "--ckpt_path", "last",
                          "--trainer.max_steps", str(target)]).fit()
        assert checkpoint_step(last) == target
        assert not list(last.parent.glob("last-*"))  # never last-v1.ckpt
    copied = tmp_path / "elsewhere"
    shutil.copytree(tmp_path / "run", copied / "run")
    original = folder_state(tmp_path / "run")
    TrainingCLI(args=["--config", str(copied / "run" / "config.yaml"), "--runs_root", str(copied),
                      "--ckpt_path", "last", "--trainer.max_steps", str(stopped + 6)]).fit()
    assert checkpoint_step(copied / "run" / "checkpoints" / "last.ckpt") == stopped + 6
    assert not list((copied / "run" / "checkpoints").glob("last-*"))
    assert folder_state(tmp_path / "run") == original


def test_reusing_a_run_name_refuses_and_changes_nothing(tmp_path, monkeypatch, capsys):
    assert run_main(demo_args(tmp_path), monkeypatch, capsys)[0] == 0
    before = folder_state(tmp_path / "run")
    code, out = run_main(demo_args(tmp_path, "--model.latent_size", "4"), monkeypatch, capsys)
    assert code == 2 and "Traceback" not in out.err
    for fragment in (f"{tmp_path / 'run'}: a run named 'run' already exists; nothing was changed",
                     f"--config {tmp_path / 'run' / 'config.yaml'} --ckpt_path last", "another --name", "--overwrite"):
        assert fragment in out.err, out.err
    assert folder_state(tmp_path / "run") == before

    assert run_main(demo_args(tmp_path, "--model.latent_size", "4", "--overwrite", steps=1), monkeypatch, capsys)[0] == 0
    assert "latent_size: 4" in (tmp_path / "run" / "config.yaml").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # the replaced run is gone, nothing set aside
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["last.ckpt", "step-1.ckpt"]
    assert len(list((tmp_path / "run").glob("events.out.tfevents.*"))) == 1
    # the saved config replays neither --overwrite nor --ckpt_path: starting from it refuses again
    code, out = run_main(["--config", str(tmp_path / "run" / "config.yaml")], monkeypatch, capsys)
    assert code == 2 and "already exists" in out.err


def test_overwrite_that_fails_puts_the_old_run_back(tmp_path, monkeypatch, capsys):
    assert run_main(demo_args(tmp_path), monkeypatch, capsys)[0] == 0
    before = folder_state(tmp_path / "run")
    code, out = run_main(demo_args(tmp_path, "--overwrite", "--data.path", str(tmp_path / "nowhere")),
                         monkeypatch, capsys)
    assert code == 2 and "nowhere" in out.err
    assert folder_state(tmp_path / "run") == before and sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_bad_checkpoints_say_what_the_file_is_not(tmp_path, monkeypatch, capsys):
    assert run_main(demo_args(tmp_path), monkeypatch, capsys)[0] == 0
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    good = last.read_bytes()
    random_bytes = tmp_path / "random.ckpt"
    random_bytes.write_bytes(np.random.default_rng(0).bytes(4096))
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(good[: len(good) // 2])
    tensor = tmp_path / "tensor.ckpt"
    torch.save(torch.zeros(3), tensor)
    resume = ["--config", str(tmp_path / "run" / "config.yaml"), "--trainer.max_steps", "4"]
    cases = [(random_bytes, "random.ckpt: not a checkpoint (checkpoints are zip archives"),
             (truncated, "truncated.ckpt: a truncated or damaged checkpoint"),
             (tensor, "tensor.ckpt: a PyTorch file, but not a rave_ddsp training checkpoint")]
    for path, message in cases:
        code, out = run_main([*resume, "--ckpt_path", str(path)], monkeypatch, capsys)
        assert code == 2 and message in out.err and "Traceback" not in out.err, out.err
        assert "weights_only" not in out.err and "file an issue" not in out.err
    last.write_bytes(good[:1000])  # --ckpt_path last, truncated by a full disk
    code, out = run_main([*resume, "--ckpt_path", "last"], monkeypatch, capsys)
    assert code == 2 and "last.ckpt: a truncated or damaged checkpoint" in out.err and "step-*.ckpt" in out.err
    last.write_bytes(good)
    code, out = run_main(demo_args(tmp_path, "--name", "other", "--model.latent_size", "4", "--ckpt_path", str(last)),
                         monkeypatch, capsys)
    assert code == 2 and "Traceback" not in out.err
    assert "trained with other model settings" in out.err and "latent_size: 8 in the checkpoint, 4 now" in out.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["random.ckpt", "run", "tensor.ckpt", "truncated.ckpt"]


def test_a_run_saved_before_the_layout_change_resumes_and_exports(tmp_path):
    """tests/fixtures/pre_layout_run was saved with the old flat module paths (see its README)."""
    from rave_ddsp.runtime.export import export

    run = tmp_path / "pre_layout"
    shutil.copytree(ROOT / "tests" / "fixtures" / "pre_layout_run", run)
    assert "class_path: rave_ddsp.augment.RandomGain" in (run / "config.yaml").read_text()
    cli = TrainingCLI(args=["--config", str(run / "config.yaml"), "--runs_root", str(tmp_path), "--ckpt_path", "last",
                            "--trainer.max_steps", "4", *QUICK])
    cli.fit()
    assert checkpoint_step(run / "checkpoints" / "last.ckpt") == 4 and cli.model.in_phase2()
    assert type(cli.datamodule.augmentations[0]).__name__ == "RandomGain"
    summary = export(run, tmp_path / "old.ts")
    assert summary.latent_size == 4 and (tmp_path / "old.ts").stat().st_size > 0

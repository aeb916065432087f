"""Checkpoints and run folders under attack: a bad newest checkpoint, damaged state files, a full
disk, Ctrl-C, and a --run-dir that is somebody else's folder.

The real commands on tiny settings where the promise is about the command; the format's checks
in-process.
"""

import json
import re
import resource
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
import torch
from helpers import PYTHON, ROOT, assert_user_error, base_env, run, snapshot
from jobs import (
    Background,
    assert_same_weights,
    checkpoint_dir,
    network_weights,
    python_train,
    steps_saved,
    temporary_folders,
    training_started,
    wait_until,
)

from gan import checkpoint as ckpt
from gan.config import load_config
from gan.errors import GanError
from gan.run_folder import RESUMABLE_CHANGES, RUN_MARKER, check_ours, check_same_experiment


def train_here(run_dir: Path, *overrides, **popen) -> subprocess.CompletedProcess:
    """`python train.py` in one process: exact resume, and signals reach the trainer itself."""
    return run(python_train(run_dir, *overrides), **popen)


def output(proc) -> str:
    return (proc.stdout + proc.stderr).replace("\r", "\n")


def set_aside_steps(run_dir: Path) -> list[int]:
    return [step for step, _ in ckpt.list_set_aside(run_dir)]


# --------------------------------------------------------------------------- rotation


def test_a_bad_newest_checkpoint_is_set_aside_and_never_rotates_the_good_ones_away(tmp_path):
    run_dir = tmp_path / "run"
    keep_one = ["train.checkpoint_every=2", "train.keep_checkpoints=1"]
    train_here(run_dir, "train.steps=8", *keep_one, check=True)
    bad = checkpoint_dir(run_dir, 8) / "G_ema.safetensors"
    bad.write_bytes(bad.read_bytes()[:1000])
    # a user's file that merely starts like our temporary names: never ours to remove
    backup = run_dir / "checkpoints" / ".tmp-backup" / "thesis.tex"
    backup.parent.mkdir()
    backup.write_text("chapter 1")

    resumed = train_here(run_dir, "train.steps=7", *keep_one, check=True)
    assert "warning: skipping checkpoint step 8" in output(resumed) and "kept aside as step-0000008.bad" in output(resumed)
    assert steps_saved(run_dir) == [7] and set_aside_steps(run_dir) == [8]
    assert (run_dir / "FINISHED").exists() and backup.read_text() == "chapter 1"


def fake_checkpoint(run_dir: Path, step: int, suffix: str = "") -> Path:
    path = ckpt.checkpoints_dir(run_dir) / f"{ckpt.step_name(step)}{suffix}"
    path.mkdir(parents=True)
    (path / "meta.json").write_text(json.dumps({"step": step}))
    return path


def test_rotation_keeps_the_checkpoint_just_written_and_bounds_the_set_aside_ones(tmp_path):
    # A complete checkpoint of a later step (what a SIGTERM'd resume below a bad one used to face):
    # the one just written survives rotation whatever the others' steps.
    for step in (3, 8):
        fake_checkpoint(tmp_path, step)
    for step in (1, 2, 4, 5):
        fake_checkpoint(tmp_path, step, ".bad")
    ckpt.rotate(tmp_path, keep=1, written=3)
    assert steps_saved(tmp_path) == [3]
    assert set_aside_steps(tmp_path) == [5]
    fake_checkpoint(tmp_path, 9)
    ckpt.rotate(tmp_path, keep=2, written=9)
    assert steps_saved(tmp_path) == [3, 9] and not temporary_folders(tmp_path)


# --------------------------------------------------------------------------- damaged files


def adam_state(width: int) -> tuple[dict, torch.optim.Optimizer]:
    layer = torch.nn.Linear(width, 3)
    optimizer = torch.optim.Adam(layer.parameters(), fused=True)
    layer(torch.ones(2, width)).sum().backward()
    optimizer.step()
    return optimizer.state_dict(), optimizer


def test_optimizer_state_must_match_every_parameter_in_shape_and_dtype():
    wide, wide_opt = adam_state(4)
    narrow, _ = adam_state(2)
    ckpt.check_optimizer_state(wide, wide_opt, "opt_G")  # its own state fits
    with pytest.raises(ValueError, match=r"opt_G holds exp_avg of shape \(3, 2\) float32 for a parameter of shape \(3, 4\) float32"):
        ckpt.check_optimizer_state(narrow, wide_opt, "opt_G")
    halved = {**wide, "state": {i: {**s, "exp_avg_sq": s["exp_avg_sq"].half()} for i, s in wide["state"].items()}}
    with pytest.raises(ValueError, match="exp_avg_sq of shape .* float16 for a parameter of .* float32"):
        ckpt.check_optimizer_state(halved, wide_opt, "opt_G")
    sgd = torch.optim.SGD(torch.nn.Linear(4, 3).parameters(), lr=0.1, momentum=0.9)
    momentum = {"state": {0: {"momentum_buffer": torch.zeros(3, 4)}}, "param_groups": sgd.state_dict()["param_groups"]}
    with pytest.raises(ValueError, match="not Adam's"):
        ckpt.check_optimizer_state(momentum, wide_opt, "opt_G")


def edit_state(path: Path, edit) -> None:
    state = torch.load(path / "state.pt", weights_only=True)
    torch.save(edit(state), path / "state.pt")


def edit_meta(path: Path, **changes) -> None:
    meta = json.loads((path / "meta.json").read_text())
    (path / "meta.json").write_text(json.dumps({**meta, **changes}))


def widen_first_moment(state: dict) -> dict:
    entry = state["opt_G"]["state"][0]
    entry["exp_avg"] = torch.zeros(*entry["exp_avg"].shape[:-1], entry["exp_avg"].shape[-1] + 1)
    return state


def sgd_state(state: dict) -> dict:
    state["opt_D"]["state"] = {i: {"momentum_buffer": s["exp_avg"]} for i, s in state["opt_D"]["state"].items()}
    return state


# step -> (damage, the reason the warning must give). Each of these once stopped every relaunch
# with a traceback (or, for the optimizer's shapes, a segfault); step 1 is the good one.
DAMAGE = {
    9: (lambda p: edit_meta(p, files=5), r"meta.json.* has a 'files' entry that is not a list"),
    8: (lambda p: edit_meta(p, step="six"), r"meta.json.* has step 'six'"),
    7: (lambda p: torch.save(torch.zeros(3), p / "state.pt"), r"state.pt.* holds a Tensor, not the training state"),
    6: (lambda p: edit_state(p, sgd_state), r"state.pt.* does not fit this run \(opt_D holds state \['momentum_buffer'\]"),
    5: (lambda p: edit_state(p, widen_first_moment), r"state.pt.* does not fit this run \(opt_G holds exp_avg"),
    4: (lambda p: edit_state(p, lambda s: {**s, "step": 9}), r"state.pt.* says step 9, its checkpoint is step 4"),
    3: (lambda p: torch.save({"cuda": []}, p / "rng-rank0.pt"), r"rng-rank0.pt.* has no 'torch' RNG state"),
    2: (lambda p: torch.save({"torch": torch.zeros(7, dtype=torch.uint8)}, p / "rng-rank0.pt"),
        r"rng-rank0.pt.* holds an RNG state torch refuses"),
}


def test_damaged_checkpoints_are_skipped_with_their_reason_and_nothing_of_them_is_applied(tmp_path):
    run_dir = tmp_path / "run"
    every_step = ["train.steps=9", "train.checkpoint_every=1", "train.keep_checkpoints=10"]
    train_here(run_dir, *every_step, check=True)
    original = network_weights(run_dir, 9)
    for step, (damage, _) in DAMAGE.items():
        damage(checkpoint_dir(run_dir, step))

    out_png = tmp_path / "never.png"
    generate = run([PYTHON, "-m", "gan.generate", checkpoint_dir(run_dir, 8), "--num", "2", "--out", out_png])
    assert_user_error(generate, "has step 'six'")
    assert not out_png.exists()

    resumed = train_here(run_dir, *every_step)
    text = output(resumed)
    assert resumed.returncode == 0 and "Traceback" not in text, text[-3000:]
    for step, (_, reason) in DAMAGE.items():
        assert re.search(rf"warning: skipping checkpoint step {step}: .*{reason}", text), (step, text[-4000:])
    assert f"resuming from {checkpoint_dir(run_dir, 1)} (step 1)" in text
    assert_same_weights(original, network_weights(run_dir, 9))  # retrained 2-9 exactly: nothing bad applied
    assert set_aside_steps(run_dir) == sorted(DAMAGE)


# --------------------------------------------------------------------------- full disk, Ctrl-C


def test_a_full_disk_stops_with_one_line_and_keeps_the_previous_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    cadence = ["train.checkpoint_every=3"]
    train_here(run_dir, "train.steps=3", *cadence, check=True)
    before = snapshot(checkpoint_dir(run_dir, 3))

    def small_files():  # writes past 100 KB fail (EFBIG), as on a full disk; Python ignores SIGXFSZ
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))

    proc = subprocess.run([str(a) for a in python_train(run_dir, "train.steps=6", *cadence)], cwd=ROOT,
                          env=base_env(), capture_output=True, text=True, timeout=300, preexec_fn=small_files)  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in output(proc), output(proc)[-3000:]
    last = proc.stderr.strip().splitlines()[-1]  # after the progress bar
    assert last.startswith("error: the checkpoint of step 6 could not be written"), last
    assert f"{checkpoint_dir(run_dir, 3)}, is intact" in last
    assert steps_saved(run_dir) == [3] and snapshot(checkpoint_dir(run_dir, 3)) == before
    assert not temporary_folders(run_dir)
    resumed = train_here(run_dir, "train.steps=6", *cadence, check=True)
    assert steps_saved(run_dir) == [3, 6] and "(step 3)" in resumed.stdout


LONG = ["train.steps=100000", "train.checkpoint_every=100000", "train.sample_every=100000"]


def test_ctrl_c_checkpoints_and_exits_and_a_second_ctrl_c_exits_at_once(tmp_path):
    once, twice = tmp_path / "once", tmp_path / "twice"
    with (
        Background(python_train(once, *LONG), tmp_path / "once.log") as first,
        Background(python_train(twice, *LONG), tmp_path / "twice.log") as second,
    ):
        for job, run_dir in ((first, once), (second, twice)):
            wait_until(lambda run_dir=run_dir: training_started(run_dir), job, "training")
        first.proc.send_signal(signal.SIGINT)
        second.proc.send_signal(signal.SIGINT)
        second.proc.send_signal(signal.SIGINT)
        assert first.wait() == 130 and second.wait() == 130, first.output()[-2000:] + second.output()[-2000:]
    found = re.search(r"SIGINT: checkpoint written at step (\d+); exiting with code 130", first.output())
    assert found and steps_saved(once) == [int(found.group(1))], first.output()[-3000:]
    for job in (first, second):
        assert "Traceback" not in job.output() and "KeyboardInterrupt" not in job.output(), job.output()[-3000:]
    assert not (once / "FINISHED").exists()


# --------------------------------------------------------------------------- run folders


def test_a_folder_that_is_not_a_run_is_refused_and_left_unchanged(tmp_path, dcgan_run):
    folder = tmp_path / "mine"
    for name, text in {"checkpoints/.tmp-backup/thesis.tex": "chapter 1", "samples/step-0000003.png": "my plot",
                       "FINISHED": "my notes"}.items():  # fmt: skip
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    before = snapshot(folder)
    proc = train_here(folder, "train.steps=3")
    assert_user_error(proc, f"--run-dir {str(folder)!r} is a folder that is not a run folder", RUN_MARKER)
    assert snapshot(folder) == before

    legacy = tmp_path / "legacy"  # a run made before the marker: its config.yaml makes it ours
    shutil.copytree(dcgan_run, legacy)
    (legacy / RUN_MARKER).unlink()
    train_here(legacy, check=True)
    assert (legacy / RUN_MARKER).is_file()


def test_the_resume_refusal_names_exactly_the_keys_that_may_change():
    base = load_config(ROOT / "configs/dcgan_mnist.yaml")
    for key in ("train.keep_checkpoints=9", "train.on_nonfinite=skip", "eval.inception_weights=x.pth",
                "data.root=elsewhere"):  # fmt: skip   (mnist5k does not read data.root)
        check_same_experiment(base, load_config(ROOT / "configs/dcgan_mnist.yaml", [key]), Path("R"))
    folder = load_config(ROOT / "configs/dcgan_mnist.yaml", ["data.name=image_folder", "data.root=a"])
    moved = load_config(ROOT / "configs/dcgan_mnist.yaml", ["data.name=image_folder", "data.root=b"])
    with pytest.raises(GanError) as refused:
        check_same_experiment(folder, moved, Path("R"))
    message = str(refused.value)
    assert "data.root: 'a' -> 'b'" in message
    assert f"only {', '.join(RESUMABLE_CHANGES)} may change" in message
    assert all(k in message for k in ("train.keep_checkpoints", "train.on_nonfinite", "eval.*"))


def test_a_folder_holding_only_slurm_logs_counts_as_empty(tmp_path):
    (tmp_path / "slurm-7.out").write_text("the job's log, written before training starts")
    check_ours(tmp_path)
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(GanError, match="holds notes.txt, slurm-7.out and no .gan-run marker"):
        check_ours(tmp_path)

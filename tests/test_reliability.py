"""kill -9 at any moment (and the lock it leaves), corrupt and hostile checkpoints, non-finite losses.

The real commands on tiny settings; the hostile files carry a pickle payload that would create a
marker file, and each test first proves that the payload does run when unpickled unsafely.
"""

import os
import pickle
import random
import re
import shutil
import time
from pathlib import Path

import pytest
import torch
from helpers import PYTHON, ROOT, TINY, assert_user_error, base_env, run, snapshot, train
from jobs import (
    Background,
    assert_complete,
    assert_same_weights,
    checkpoint_dir,
    network_weights,
    newest_step,
    python_train,
    steps_saved,
    temporary_folders,
    wait_until,
)
from safetensors.torch import load_file, save_file

from gan import checkpoint as ckpt

EVALUATE = ROOT / "evaluate.py"
# 8 steps, a checkpoint every 2, all 4 kept: steps 2, 4, 6 and 8.
FOUR = [*TINY, "train.steps=8", "train.checkpoint_every=2", "train.keep_checkpoints=4"]


@pytest.fixture(scope="module")
def four_checkpoints(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("reliability") / "four"
    train("dcgan_mnist", run_dir, *FOUR)
    assert steps_saved(run_dir) == [2, 4, 6, 8]
    return run_dir


def copy_run(source: Path, tmp_path: Path) -> Path:
    target = tmp_path / "run"
    shutil.copytree(source, target)
    return target


# --------------------------------------------------------------------------- kill -9

KILLED = ["train.steps=80", "train.checkpoint_every=2", "train.keep_checkpoints=2", "train.sample_every=10",
          "train.log_every=5"]  # fmt: skip


def saving(run_dir: Path) -> bool:
    """A checkpoint is being written (a save takes ~25-65 ms here, mostly fsync)."""
    return any(name.startswith(".tmp-step-") for name in temporary_folders(run_dir))


def kill_once(run_dir: Path, log: Path, when: str, rng: random.Random) -> str:
    """Launch (resuming), wait for a new checkpoint, then kill -9 mid-training or as a save begins.

    Returns what happened. The new checkpoint also shows that the previous, killed process left
    no stuck lock.
    """
    before = newest_step(run_dir)
    with Background(python_train(run_dir, *KILLED), log) as job:
        wait_until(lambda: newest_step(run_dir) > before or job.proc.poll() is not None, job, "a new checkpoint")
        if when == "training":
            time.sleep(rng.uniform(0, 0.3))
        else:
            wait_until(lambda: saving(run_dir) or job.proc.poll() is not None, job, "a save", poll=0.0005)
            time.sleep(rng.uniform(0, 0.002))
        if job.proc.poll() is not None:
            return "finished before the kill"
        job.proc.kill()
        job.wait()
    # The dead process's pid stays in DIR/.lock, but the kernel dropped its flock: the next launch runs.
    assert (run_dir / ".lock").read_text().strip() == str(job.pid)
    return "killed mid-save" if saving(run_dir) else "killed"


def test_kill_9_anywhere_then_resume_equals_no_interruption(tmp_path):
    seed = random.randrange(10**6)
    print(f"kill schedule: random.Random({seed})")
    rng = random.Random(seed)
    straight = Background(python_train(tmp_path / "straight", *KILLED), tmp_path / "straight.log")
    run_dir = tmp_path / "killed"
    with straight:
        outcomes = []
        for i, when in enumerate(["training", "saving", "training", "saving"]):
            outcomes.append(kill_once(run_dir, tmp_path / f"kill{i}.log", when, rng))
            print(f"kill {i} aimed at {when}: {outcomes[-1]}, newest complete step {newest_step(run_dir)}, "
                  f"left {temporary_folders(run_dir)}")  # fmt: skip
            for _, path in ckpt.list_checkpoints(run_dir):  # only complete checkpoints, whatever the moment
                assert_complete(path)
        assert "finished before the kill" not in outcomes and "killed mid-save" in outcomes, outcomes
        # A crash's leftover temporary folder (of a later step) is ignored by readers ...
        leftover = run_dir / "checkpoints" / ".tmp-step-0000999"
        leftover.mkdir(exist_ok=True)
        (leftover / "meta.json").write_text('{"step": 999}')
        newest = newest_step(run_dir)
        generated = run([PYTHON, "-m", "gan.generate", run_dir, "--num", "1", "--out", tmp_path / "g.png"], check=True)
        assert f"(step {newest})" in generated.stdout
        # ... and removed by the next launch, which finishes the run.
        last = run(python_train(run_dir, *KILLED), env=base_env(ACCELERATE_USE_CPU="1"), check=True)
        assert f"(step {newest})" in last.stdout
        assert straight.wait() == 0, straight.output()[-3000:]
    assert not temporary_folders(run_dir)
    assert_same_weights(network_weights(tmp_path / "straight", 80), network_weights(run_dir, 80))


# --------------------------------------------------------------------------- bad checkpoints


class Payload:
    """Unpickling this runs `touch MARKER`."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def write_torch_zip(path: Path, marker: Path) -> None:
    torch.save({"step": Payload(marker)}, path)


def write_pickle(path: Path, marker: Path) -> None:
    path.write_bytes(pickle.dumps({"step": Payload(marker)}))


def prove_payload_runs(tmp_path: Path) -> None:
    live = tmp_path / "payload-is-live"
    pickle.loads(pickle.dumps(Payload(live)))
    assert live.exists(), "the payload does nothing: the safety checks below would prove nothing"


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def reshape_first_tensor(path: Path) -> None:
    tensors = load_file(path)
    key = sorted(tensors)[0]
    tensors[key] = torch.zeros(*tensors[key].shape[:-1], tensors[key].shape[-1] + 1)
    save_file(tensors, path)


def generate_error(source: Path, tmp_path: Path, *needles: str) -> None:
    out = tmp_path / "never.png"
    proc = run([PYTHON, "-m", "gan.generate", source, "--num", "2", "--out", out])
    assert_user_error(proc, *needles)
    assert not out.exists()


def test_corrupt_checkpoints_are_skipped_for_the_previous_complete_one(four_checkpoints, tmp_path):
    run_dir = copy_run(four_checkpoints, tmp_path)
    bad = {
        8: ("G_ema.safetensors", truncate, "is not a valid safetensors file"),
        6: ("G_ema.safetensors", Path.unlink, "is missing"),
        4: ("G_ema.safetensors", reshape_first_tensor, "does not fit the configured network"),
    }
    for step, (name, damage, message) in bad.items():
        damage(checkpoint_dir(run_dir, step) / name)
        generate_error(checkpoint_dir(run_dir, step), tmp_path, f"{checkpoint_dir(run_dir, step) / name}", message)
    generate_error(run_dir, tmp_path, str(checkpoint_dir(run_dir, 8) / "G_ema.safetensors"))  # the newest
    resumed = train("dcgan_mnist", run_dir, *FOUR)
    output = resumed.stdout + resumed.stderr
    for step, (name, _, message) in bad.items():
        assert re.search(rf"warning: skipping checkpoint step {step}: .*{name}.* {message}", output), output
    assert f"resuming from {checkpoint_dir(run_dir, 2)} (step 2)" in output
    # resuming from step 2 retrains 3-8 exactly; the bad checkpoints are replaced and kept aside
    assert_same_weights(network_weights(four_checkpoints, 8), network_weights(run_dir, 8))
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("*.bad")) == [
        "step-0000004.bad", "step-0000006.bad", "step-0000008.bad"]  # fmt: skip


def test_hostile_pickles_are_refused_and_never_run(four_checkpoints, tmp_path):
    prove_payload_runs(tmp_path)
    marker = tmp_path / "pwned"
    run_dir = copy_run(four_checkpoints, tmp_path)
    hostile = {8: ("state.pt", write_torch_zip), 6: ("G_ema.safetensors", write_pickle),
               4: ("rng-rank0.pt", write_pickle), 2: ("D.safetensors", write_torch_zip)}  # fmt: skip
    for step, (name, write) in hostile.items():
        write(checkpoint_dir(run_dir, step) / name, marker)
    generate_error(checkpoint_dir(run_dir, 8), tmp_path, "state.pt", "pickle payload", "refused")
    generate_error(checkpoint_dir(run_dir, 6), tmp_path, "G_ema.safetensors", "pickle", "refused")
    assert not marker.exists()
    # Every checkpoint is bad: training starts afresh, with networks untouched by the bad files,
    # so it ends exactly where the original run ended.
    resumed = train("dcgan_mnist", run_dir, *FOUR)
    output = resumed.stdout + resumed.stderr
    for step, (name, _) in hostile.items():
        assert re.search(rf"warning: skipping checkpoint step {step}: .*{name}.* refused", output), output
    assert "resuming from" not in output
    assert not marker.exists()
    assert_same_weights(network_weights(four_checkpoints, 8), network_weights(run_dir, 8))


def test_evaluate_refuses_hostile_and_corrupt_checkpoints_by_name(four_checkpoints, tmp_path):
    prove_payload_runs(tmp_path)
    marker = tmp_path / "pwned"
    run_dir = copy_run(four_checkpoints, tmp_path)
    write_torch_zip(checkpoint_dir(run_dir, 8) / "state.pt", marker)
    truncate(checkpoint_dir(run_dir, 6) / "G_ema.safetensors")
    before = snapshot(run_dir)
    proc = run([PYTHON, EVALUATE, run_dir, "--checkpoints", "6,8", "--metrics", "fid", "--num-samples", "10"],
               env=base_env(ACCELERATE_USE_CPU="1"))  # fmt: skip
    # evaluate reports each skipped checkpoint as it goes, then ends with one error line naming them all
    assert proc.returncode == 2 and "Traceback" not in proc.stdout + proc.stderr, proc.stderr[-3000:]
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("error: 2 checkpoint(s) could not be evaluated"), line
    assert re.search(r"step 6: .*G_ema.safetensors.* is not a valid safetensors file", line), line
    assert re.search(r"step 8: .*state.pt.* pickle payload.* refused", line), line
    assert not marker.exists()
    after = snapshot(run_dir)
    assert after.pop(".eval.lock", (0,))[0] == 0  # evaluators' empty lock file (run_folder.eval_lock)
    assert after == before


# --------------------------------------------------------------------------- non-finite losses

# Adam moves every weight of G by ~1e30 in the first step: G's BatchNorm overflows to inf - inf = nan
# in the second, so D's loss is nan at step 2 (the first checkpoint, at step 1, is good).
BLOW_UP = [*TINY, "train.steps=6", "train.checkpoint_every=1", "train.keep_checkpoints=10", "optim.lr_g=1.0e+30"]


def test_nonfinite_loss_stops_or_skips_and_keeps_the_last_good_checkpoint(tmp_path):
    stop_dir, skip_dir = tmp_path / "stop", tmp_path / "skip"
    with (  # both side by side; train.on_nonfinite=stop is the default
        Background(python_train(stop_dir, *BLOW_UP), tmp_path / "stop.log") as stop,
        Background(python_train(skip_dir, *BLOW_UP, "train.on_nonfinite=skip", "train.max_nonfinite_skips=3"),
                   tmp_path / "skip.log") as skip,
    ):  # fmt: skip
        assert stop.wait() == 3 and skip.wait() == 3, stop.output()[-2000:] + skip.output()[-2000:]

    found = re.search(r"error: non-finite (d_loss|g_loss) at step (\d+); stopping", stop.output())
    assert found, stop.output()[-3000:]
    step = int(found.group(2))
    assert step >= 2 and steps_saved(stop_dir) == list(range(1, step))  # nothing saved at or after it
    assert not temporary_folders(stop_dir) and not (stop_dir / "FINISHED").exists()
    for tensors in network_weights(stop_dir, step - 1).values():
        assert all(t.isfinite().all() for t in tensors.values())
    assert "Traceback" not in stop.output()

    dropped = re.findall(r"warning: non-finite \w+ at step (\d+); update dropped \((\d+) so far\)", skip.output())
    assert dropped == [(str(step), "1"), (str(step), "2")], skip.output()[-3000:]
    assert f"non-finite d_loss at step {step}: 3 skipped updates in a row" in skip.output()
    assert steps_saved(skip_dir) == list(range(1, step)) and "Traceback" not in skip.output()

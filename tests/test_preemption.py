"""SIGTERM/SIGUSR1: finish the step, checkpoint, mark the W&B run preempting, exit 75; a relaunch resumes.

One process is signalled directly (`python train.py`). Under `accelerate launch` with 2 processes
torchrun's elastic agent sits between SLURM and the workers: on SIGTERM it forwards SIGTERM to the
workers (and SIGKILLs them 30 s later); SIGUSR1 is not handled and kills the agent, orphaning the
workers. So a batch script runs the launcher under `trap "" USR1` and the signal reaches the workers
(SLURM signals every process of the step). Each case below is what the README tells a user to do.
"""

import json
import re
import signal
import subprocess
import time

import pytest
from helpers import PYTHON, ROOT, TINY, base_env, run, train_cmd
from jobs import (
    Background,
    assert_complete,
    checkpoint_dir,
    python_train,
    steps_saved,
    temporary_folders,
    training_started,
    wait_until,
)
from wandb_records import records, wandb_files

EXIT_PREEMPTED = 75
# Long enough never to finish by itself; the only checkpoint is the one the signal asks for.
ENDLESS = ["train.steps=100000", "train.checkpoint_every=100000", "train.sample_every=100000", "train.log_every=2"]
OFFLINE = base_env(WANDB_MODE="offline", ACCELERATE_USE_CPU="1")


def stopped_at(output: str) -> int:
    found = re.findall(r"checkpoint written at step (\d+); exiting with code 75", output)
    assert len(found) == 1, f"expected one stop message (from the main process):\n{output[-3000:]}"
    return int(found[0])


def resumed_from(output: str) -> int:
    found = re.search(r"resuming from \S+ \(step (\d+)\)", output)
    assert found, output[-3000:]
    return int(found.group(1))


def logged_after(run_dir, step: int) -> bool:
    """A scalar line for a step after `step`: the relaunched run is training again."""
    if not training_started(run_dir):
        return False
    lines = (run_dir / "train_log.jsonl").read_text().splitlines()
    return any(json.loads(line)["step"] > step for line in lines if line.endswith("}"))


def signal_during_save(job: Background, run_dir, signum) -> int:
    """Send signum, then again every half millisecond while the checkpoint is being written and after
    it is in place, until the process exits (Python's shutdown puts the default handler back: a signal
    then would kill it). Returns how many signals arrived while the temporary folder existed."""
    job.proc.send_signal(signum)
    during = 0
    deadline = time.monotonic() + 120
    while job.proc.poll() is None and time.monotonic() < deadline:
        saving = bool(temporary_folders(run_dir))
        try:
            job.proc.send_signal(signum)
        except ProcessLookupError:  # exited between poll() and the signal
            break
        during += saving
        time.sleep(0.0005)
    return during


def test_one_process_stops_checkpoints_and_resumes_and_a_second_trainer_is_refused(tmp_path):
    run_dir = tmp_path / "run"
    with Background(python_train(run_dir, *ENDLESS), tmp_path / "first.log", OFFLINE) as job:
        wait_until(lambda: training_started(run_dir), job, "training")
        # A second trainer on the same run folder is refused (a dead one's lock: see test_reliability's kill -9).
        second = run(python_train(run_dir, *ENDLESS))
        assert second.returncode == 2 and "Traceback" not in second.stderr
        assert second.stderr.strip() == f"error: --run-dir {str(run_dir)!r} is in use by a running trainer (pid {job.pid})"
        job.proc.send_signal(signal.SIGUSR1)
        assert job.wait() == EXIT_PREEMPTED, job.output()[-3000:]
    first = stopped_at(job.output())
    assert f"SIGUSR1: checkpoint written at step {first}" in job.output()
    assert steps_saved(run_dir) == [first] and not (run_dir / "FINISHED").exists()
    assert_complete(checkpoint_dir(run_dir, first))
    (wandb_file,) = wandb_files(run_dir)
    assert "preempting" in {r.WhichOneof("record_type") for r in records(wandb_file)}

    # Relaunch; then SIGTERM, and SIGTERM again and again while the checkpoint is being written and after.
    with Background(python_train(run_dir, *ENDLESS), tmp_path / "second.log", OFFLINE) as job:
        wait_until(lambda: logged_after(run_dir, first + 2), job, "training after the resume")
        during_save = signal_during_save(job, run_dir, signal.SIGTERM)
        assert job.wait() == EXIT_PREEMPTED, job.output()[-3000:]
    assert resumed_from(job.output()) == first
    second = stopped_at(job.output())
    assert second > first and steps_saved(run_dir) == [first, second]
    assert during_save > 0, "no signal arrived during the save; the test proved nothing"
    assert_complete(checkpoint_dir(run_dir, second))
    assert not temporary_folders(run_dir)

    # The last relaunch finishes, in the same W&B run.
    with Background(python_train(run_dir, *ENDLESS, f"train.steps={second + 2}"), tmp_path / "last.log",
                    OFFLINE) as job:  # fmt: skip
        assert job.wait() == 0, job.output()[-3000:]
    assert resumed_from(job.output()) == second
    assert (run_dir / "FINISHED").read_text().strip() == str(second + 2)
    run_id = (run_dir / "wandb_run_id.txt").read_text().strip()
    assert [f.name for f in wandb_files(run_dir)] == [f"run-{run_id}.wandb"] * 3


def two_process_job(run_dir, log, *overrides, **popen) -> Background:
    args = train_cmd("dcgan_mnist", run_dir, *TINY, *ENDLESS, *overrides, processes=2)
    return Background(args, log, OFFLINE, **popen)


def assert_stopped_together(run_dir, output: str, earlier: list[int]) -> int:
    """One new checkpoint, written once by the main process, with both ranks' RNG states; equal replicas."""
    step = stopped_at(output)
    assert steps_saved(run_dir) == [*earlier, step] and not (run_dir / "FINISHED").exists()
    folder = checkpoint_dir(run_dir, step)
    assert_complete(folder)
    assert sorted(p.name for p in folder.glob("rng-rank*.pt")) == ["rng-rank0.pt", "rng-rank1.pt"]
    digests = json.loads((run_dir / "replicas.json").read_text())["rank_digests"]
    assert len(digests) == 2 and digests[0] == digests[1]
    return step


def ignore_usr1():
    """What `trap "" USR1` does for the launcher in a batch script (the workers install their own handler)."""
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)


def stop_two_processes(run_dir, log, how: str) -> str:
    """Launch 2 processes (resuming), signal them as `how` says once they train; the launcher's output."""
    popen = {"preexec_fn": ignore_usr1} if how == "usr1_to_every_process" else {}
    args = train_cmd("dcgan_mnist", run_dir, *TINY, *ENDLESS, processes=2)
    with Background(args, log, OFFLINE, **popen) as job:
        wait_until(lambda: logged_after(run_dir, max(steps_saved(run_dir), default=0)), job, "training")
        ranks = job.workers()
        assert sorted(ranks) == [0, 1]
        if how == "usr1_to_rank_1":  # rank 0 learns of it through the all-reduce after the step
            ranks[1].send_signal(signal.SIGUSR1)
        elif how == "usr1_to_every_process":  # `scancel --signal=USR1` or `sbatch --signal=USR1@T`
            for process in (job.proc, *ranks.values()):
                process.send_signal(signal.SIGUSR1)
        else:  # SIGTERM to the launcher only: the elastic agent forwards it to the workers
            job.proc.send_signal(signal.SIGTERM)
        # torchrun reports a worker's exit code 75 as a failed launch (exit 1): a batch script
        # requeues when DIR/FINISHED is missing, not on the launcher's exit code.
        assert job.wait() != 0
    return job.output()


def test_two_processes_stop_at_the_same_step_and_resume(tmp_path):
    run_dir = tmp_path / "run"
    output = stop_two_processes(run_dir, tmp_path / "1.log", "usr1_to_rank_1")
    assert "a signal on another process: checkpoint written" in output
    assert re.search(r"exitcode\s*:\s*75", output), output[-3000:]
    first = assert_stopped_together(run_dir, output, [])

    output = stop_two_processes(run_dir, tmp_path / "2.log", "usr1_to_every_process")
    assert resumed_from(output) == first and "SIGUSR1: checkpoint written" in output
    second = assert_stopped_together(run_dir, output, [first])

    output = stop_two_processes(run_dir, tmp_path / "3.log", "sigterm_to_the_launcher")
    assert resumed_from(output) == second and "SIGTERM: checkpoint written" in output
    assert_stopped_together(run_dir, output, [first, second])


# A process that was asked to stop, wrote its checkpoint and is exiting 75; a global's __del__ holds it in
# Python's shutdown for 2 s, after the point where Python puts the default signal handlers back.
EXITING = """
import os, signal, sys, time
from gan.train_loop import StopRequest
stop = StopRequest()
os.kill(os.getpid(), signal.SIGTERM)
if stop.signum == signal.SIGTERM and sys.argv[1] == "honoured":
    stop.honoured()
class SlowShutdown:
    def __del__(self):
        time.sleep(2)
held = SlowShutdown()
print("exiting", flush=True)
sys.exit(75)
"""


@pytest.mark.parametrize("honoured, code", [("honoured", EXIT_PREEMPTED), ("not", -signal.SIGTERM)])
def test_a_signal_while_the_stopped_process_shuts_down_keeps_exit_75(honoured, code):
    # The "not" case shows what the test catches: the handler alone loses exit 75 to that late signal.
    proc = subprocess.Popen([PYTHON, "-c", EXITING, honoured], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "exiting\n"
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == code

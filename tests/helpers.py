"""Helpers the tests import: run the real commands in subprocesses, on tiny settings, offline."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
ACCELERATE = str(Path(sys.executable).with_name("accelerate"))

# Tiny settings shared by the training tests: a few steps on 512 embedded digits.
TINY = ["train.steps=6", "train.batch_size=16", "train.checkpoint_every=3", "train.sample_every=3",
        "train.log_every=2", "data.limit=512", "model.g_channels=8", "model.d_channels=8"]  # fmt: skip


def base_env(**extra) -> dict:
    env = dict(os.environ)
    env.update({"WANDB_MODE": "disabled", "WANDB_SILENT": "true", "PYTHONUNBUFFERED": "1",
                "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"})  # fmt: skip
    env.pop("WANDB_API_KEY", None)
    env.update({k: v for k, v in extra.items() if v is not None})
    for k, v in extra.items():
        if v is None:
            env.pop(k, None)
    return env


def run(args, env=None, timeout=600, check=False, cwd=ROOT) -> subprocess.CompletedProcess:
    """Run a command; returns the CompletedProcess with text stdout/stderr."""
    proc = subprocess.run([str(a) for a in args], cwd=cwd, env=env or base_env(), capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} exited {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}")
    return proc


def train_cmd(config: str, run_dir, *overrides, processes: int = 1) -> list:
    """The README's command: accelerate launch train.py ... (2 CPU processes with --multi_gpu)."""
    if processes == 1:
        launch = [ACCELERATE, "launch", "--num_processes", "1", "--num_machines", "1",
                  "--mixed_precision", "no", "--dynamo_backend", "no"]  # fmt: skip
    else:
        launch = [ACCELERATE, "launch", "--multi_gpu", "--num_processes", str(processes), "--num_machines", "1",
                  "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port())]  # fmt: skip
    return [*launch, "train.py", "--config", f"configs/{config}.yaml", "--run-dir", str(run_dir), *overrides]


def train(config: str, run_dir, *overrides, processes: int = 1, env=None, check=True):
    env = env or base_env(ACCELERATE_USE_CPU="1")
    return run(train_cmd(config, run_dir, *overrides, processes=processes), env=env, check=check)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def snapshot(folder: Path) -> dict:
    """{relative path: (size, mtime_ns)} of every file: to show a failed command changed nothing."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}  # fmt: skip


def assert_user_error(proc, *needles: str) -> str:
    """Exit 2, one `error:` line that contains every needle, no traceback."""
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]

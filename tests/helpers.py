"""Helpers the tests import: run the real commands in subprocesses, on tiny settings, offline."""

import os
import subprocess
import sys
import threading
from pathlib import Path

import forkserver

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
    """Run a command; returns the CompletedProcess with text stdout/stderr.

    The package's own commands (`python train.py`, `python evaluate.py`, `python -m gan.X`) and
    `accelerate launch` start in a process forked from one that has imported torch already
    (tests/forkserver.py); others, and those whose environment differs where an interpreter reads it
    at start, run as plain subprocesses.
    """
    args, env = [str(a) for a in args], env or base_env()
    if forkserver.forks(args, env, cwd):
        proc = forkserver.run(args, env, cwd, timeout)
    else:
        proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} exited {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}")
    return proc


ENVIRON_LOCK = threading.Lock()  # launched_env() swaps os.environ for a moment
LAUNCH_ONE = ["--num_processes", "1", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]


def train_cmd(config: str, run_dir, *overrides, processes: int = 1) -> list:
    """The README's command: accelerate launch train.py ... (2 CPU processes with --multi_gpu)."""
    if processes == 1:
        launch = [ACCELERATE, "launch", *LAUNCH_ONE]
    else:
        launch = [ACCELERATE, "launch", "--multi_gpu", "--num_processes", str(processes), "--num_machines", "1",
                  "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port())]  # fmt: skip
    return [*launch, *script_cmd(config, run_dir, *overrides)]


def script_cmd(config: str, run_dir, *overrides) -> list:
    return ["train.py", "--config", f"configs/{config}.yaml", "--run-dir", str(run_dir), *overrides]


def train(config: str, run_dir, *overrides, processes: int = 1, env=None, check=True, launcher=False):
    """`accelerate launch train.py ...`.

    With one process and launcher=False, the launcher's one child alone: `python train.py ...` in the
    environment `accelerate launch` gives it (launched_env), which helpers.run can fork.
    """
    env = env or base_env(ACCELERATE_USE_CPU="1")
    if processes == 1 and not launcher:
        return run([PYTHON, *script_cmd(config, run_dir, *overrides)], env=launched_env(env), check=check)
    return run(train_cmd(config, run_dir, *overrides, processes=processes), env=env, check=check)


def launched_env(env: dict) -> dict:
    """The environment `accelerate launch LAUNCH_ONE` gives its one process, computed by Accelerate's code."""
    from unittest import mock

    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_simple_launcher_cmd_env

    args = launch_command_parser().parse_args([*LAUNCH_ONE, "train.py"])
    with ENVIRON_LOCK, mock.patch.dict(os.environ, env, clear=True):
        args, _, _ = _validate_launch_command(args)
        _, launched = prepare_simple_launcher_cmd_env(args)
    return launched


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def evaluate_offline(cache, run_dir, *args, check=True) -> subprocess.CompletedProcess:
    """`python evaluate.py RUN_DIR ...` offline, with the shared cache (the `cache` fixture of conftest)."""
    env = base_env(GAN_CACHE_DIR=str(cache), GAN_OFFLINE="1", ACCELERATE_USE_CPU="1")
    return run([PYTHON, "evaluate.py", run_dir, *args], env=env, check=check)


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


def assert_bench_refuses(module: str, args: list, says: str, tmp_path: Path) -> None:
    """`python -m bench.MODULE ARGS` (FILE in ARGS: a user's file in tmp_path) exits 1 with an `error:`
    line holding `says`, no traceback, the user's file unchanged and no tmp_path/out made."""
    user_file = tmp_path / "FILE"
    user_file.write_text("a user's file\n")
    args = [str(user_file) if arg == "FILE" else arg for arg in args]
    result = subprocess.run([PYTHON, "-m", f"bench.{module}", *args], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)  # fmt: skip
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: ") and says in result.stderr
    assert user_file.read_text() == "a user's file\n"
    assert not (tmp_path / "out").exists()  # refused before the folder is made

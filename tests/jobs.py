"""Helpers for the reliability tests: training in the background, waiting on it, reading its checkpoints."""

import subprocess
import time
from pathlib import Path

import forkserver
import psutil
from helpers import PYTHON, ROOT, TINY, base_env
from safetensors.torch import load_file

from gan import checkpoint as ckpt


def python_train(run_dir, *overrides, config: str = "dcgan_mnist") -> list:
    """`python train.py` (one process, no launcher): what a test signals or kill -9s directly."""
    return [PYTHON, "train.py", "--config", f"configs/{config}.yaml", "--run-dir", run_dir, *TINY, *overrides]


class Background:
    """A command running beside the test; its output goes to a file (a full pipe would block it).

    Use it as a context manager: whatever is still running at the end is killed, children first.
    The package's own commands start through the fork server (tests/forkserver.py) unless popen
    options are given.
    """

    def __init__(self, args, log: Path, env=None, **popen):
        self.log = Path(log)
        args, env = [str(a) for a in args], env or base_env(ACCELERATE_USE_CPU="1")
        with open(self.log, "w") as out:
            if not popen and forkserver.forks(args, env):
                self.proc = forkserver.start(args, env, ROOT, out.fileno(), out.fileno())
            else:
                self.proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, **popen)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.kill_all()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait(self, timeout: float = 300) -> int:
        return self.proc.wait(timeout)

    def output(self) -> str:
        return self.log.read_text(errors="replace").replace("\r", "\n")

    def workers(self) -> dict[int, psutil.Process]:
        """The training processes under `accelerate launch`, by rank."""
        found = {}
        for child in psutil.Process(self.pid).children(recursive=True):
            try:
                if "train.py" in child.cmdline():
                    found[int(child.environ()["RANK"])] = child
            except (psutil.NoSuchProcess, KeyError):
                continue
        return found

    def kill_all(self) -> None:
        try:
            family = [*psutil.Process(self.pid).children(recursive=True), psutil.Process(self.pid)]
        except psutil.NoSuchProcess:
            family = []
        for process in family:
            try:
                process.kill()
            except psutil.NoSuchProcess:
                pass
        if self.proc.poll() is None:
            self.proc.wait(30)


def wait_until(condition, job: Background, what: str, timeout: float = 180, poll: float = 0.02) -> None:
    """Poll condition() until it holds; fail at once if the job exits first."""
    deadline = time.monotonic() + timeout
    while not condition():
        if job.proc.poll() is not None:
            raise AssertionError(f"exited {job.proc.returncode} before {what}:\n{job.output()[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}:\n{job.output()[-3000:]}")
        time.sleep(poll)


def training_started(run_dir: Path) -> bool:
    """The first scalars are logged (after train.log_every steps)."""
    log = Path(run_dir) / "train_log.jsonl"
    return log.exists() and log.stat().st_size > 0


def steps_saved(run_dir: Path) -> list[int]:
    return [step for step, _ in ckpt.list_checkpoints(run_dir)]


def newest_step(run_dir: Path) -> int:
    return max(steps_saved(run_dir), default=0)


def temporary_folders(run_dir: Path) -> list[str]:
    root = ckpt.checkpoints_dir(run_dir)
    try:
        return sorted(p.name for p in root.iterdir() if p.name.startswith(ckpt.TMP_PREFIX))
    except FileNotFoundError:
        return []


def checkpoint_dir(run_dir: Path, step: int) -> Path:
    return ckpt.checkpoints_dir(run_dir) / ckpt.step_name(step)


def assert_complete(path: Path) -> None:
    """Every file that meta.json lists is there and reads back."""
    meta = ckpt.read_meta(path).meta
    for name in meta["files"]:
        if name.endswith(".safetensors"):
            ckpt.load_tensors(path / name)
        elif name.endswith(".pt"):
            ckpt.load_plain(path / name)
    assert {"G.safetensors", "D.safetensors", "state.pt"} <= set(meta["files"]), meta


def network_weights(run_dir: Path, step: int) -> dict:
    folder = checkpoint_dir(run_dir, step)
    return {name: load_file(folder / f"{name}.safetensors") for name in ("G", "D", "G_ema")}


def assert_same_weights(a: dict, b: dict, tolerance: float = 1e-6) -> None:
    for name in a:
        assert a[name].keys() == b[name].keys()
        for key in a[name]:
            diff = (a[name][key].double() - b[name][key].double()).abs().max().item()
            assert diff <= tolerance, f"{name}.{key} differs by {diff}"

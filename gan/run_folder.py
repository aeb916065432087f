"""The run folder: resolved config, exclusive lock, finished marker.

DIR/config.yaml        the resolved config
DIR/checkpoints/       complete checkpoints only (see gan.checkpoint)
DIR/samples/           fixed-noise grids, step-NNNNNNN.png
DIR/train_log.jsonl    the logged scalars
DIR/FINISHED           written when training reached train.steps (the evaluator's --watch stops on it)
"""

import fcntl
import os
from pathlib import Path

from gan.config import Config, flatten, from_dict, read_yaml, to_dict, to_yaml
from gan.errors import GanError

# Keys that may change between launches of the same run: the length and cadence of training and
# the tracking options. Everything else would make the checkpoints a different experiment.
RESUMABLE_CHANGES = ("train.steps", "train.checkpoint_every", "train.sample_every", "train.log_every",
                     "train.keep_checkpoints", "train.on_nonfinite", "train.max_nonfinite_skips", "train.tf32",
                     "data.on_device", "wandb.", "eval.")  # fmt: skip


def check_run_dir(run_dir: Path) -> None:
    """Fail early, before anything is written, on a run folder that cannot be one."""
    if run_dir.exists() and not run_dir.is_dir():
        raise GanError(f"--run-dir {str(run_dir)!r} is a file, not a folder")
    probe = run_dir if run_dir.exists() else next((p for p in run_dir.parents if p.exists()), Path("."))
    if not probe.is_dir():
        raise GanError(f"--run-dir {str(run_dir)!r} cannot be created: {str(probe)!r} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise GanError(f"--run-dir {str(run_dir)!r} cannot be written to ({str(probe)!r} is not writable)")


def stored_config(run_dir: Path) -> Config | None:
    path = run_dir / "config.yaml"
    return from_dict(read_yaml(path)) if path.exists() else None


def check_same_experiment(old: Config, new: Config, run_dir: Path) -> None:
    old_flat, new_flat = flatten(to_dict(old)), flatten(to_dict(new))
    changed = [k for k in new_flat if old_flat.get(k) != new_flat[k] and not k.startswith(RESUMABLE_CHANGES)]
    if changed:
        diffs = ", ".join(f"{k}: {old_flat.get(k)!r} -> {new_flat[k]!r}" for k in changed)
        raise GanError(
            f"--run-dir {str(run_dir)!r} holds a run with a different config ({diffs}); "
            "only train.steps, the *_every cadences, train.tf32, data.on_device and wandb.* may change on resume. "
            "Use a new --run-dir."
        )


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class RunLock:
    """An exclusive flock on DIR/.lock: a second trainer on the same folder is refused.

    The kernel drops a flock when its process dies, so a crashed run never leaves it stuck.
    """

    def __init__(self, run_dir: Path):
        self.path = run_dir / ".lock"
        self.fd = None

    def acquire(self) -> None:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self.fd, 64, 0).decode(errors="replace").strip() or "another process"
            os.close(self.fd)
            self.fd = None
            raise GanError(f"--run-dir {str(self.path.parent)!r} is in use by a running trainer (pid {holder})") from None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, str(os.getpid()).encode(), 0)

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def open_run_dir(run_dir: Path, cfg: Config) -> RunLock:
    """On the main process: create or reopen the run folder, lock it and store the resolved config."""
    check_run_dir(run_dir)
    old = stored_config(run_dir) if run_dir.is_dir() else None
    if old is not None:
        check_same_experiment(old, cfg, run_dir)
    try:  # os.access says yes to root in /proc, /sys or a read-only mount; the kernel says no
        run_dir.mkdir(parents=True, exist_ok=True)
        lock = RunLock(run_dir)
        lock.acquire()
    except OSError as err:
        raise GanError(f"--run-dir {str(run_dir)!r} cannot be written to ({err.strerror})") from None
    (run_dir / "checkpoints").mkdir(exist_ok=True)
    (run_dir / "samples").mkdir(exist_ok=True)
    write_atomic(run_dir / "config.yaml", to_yaml(cfg))
    return lock

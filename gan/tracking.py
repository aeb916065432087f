"""Scalars and images: the run's tracker (gan.trackers) plus DIR/train_log.jsonl; the window means behind them.

Only the main process writes. A tracker that fails to start or to log costs one warning,
never the run: the local files stay complete.
"""

import math
from pathlib import Path

import torch

from gan.config import Config
from gan.files import open_jsonl, read_jsonl
from gan.run_folder import RunFolder
from gan.trackers import open_tracker


class WindowMeans:
    """Mean of each scalar over the logging window and across processes.

    A step's scalars are stacked into one device tensor and added to the window's sum for that set of
    names: a few kernels per step whatever the number of scalars, and no host sync. compute() sums
    across processes in one all-reduce and reads the sums once.
    """

    def __init__(self, device):
        self.device = device
        self.sums: dict[tuple[str, ...], torch.Tensor] = {}  # per set of names logged together
        self.counts: dict[tuple[str, ...], int] = {}

    def update(self, values: dict) -> None:
        names = tuple(values)
        step = torch.stack([torch.as_tensor(v, dtype=torch.float32, device=self.device).reshape(())
                            for v in values.values()]).detach()  # fmt: skip
        if names in self.sums:
            self.sums[names].add_(step)
        else:
            self.sums[names] = step
        self.counts[names] = self.counts.get(names, 0) + 1

    def compute(self) -> dict[str, float]:
        """Called on every process (one all-reduce under DDP); resets the window."""
        # A scalar with no update in this window (lazy R1 every k steps) is left out, not NaN. The
        # pattern of updates is the same on every process, so their sums line up in the all-reduce.
        if not self.sums:
            return {}
        totals = torch.cat(list(self.sums.values()))
        world = 1
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(totals)
            world = torch.distributed.get_world_size()
        sums, counts, flat = {}, {}, iter(totals.tolist())
        for names, count in self.counts.items():
            for name in names:
                sums[name] = sums.get(name, 0.0) + next(flat)
                counts[name] = counts.get(name, 0) + count
        self.sums, self.counts = {}, {}
        return {name: sums[name] / (counts[name] * world) for name in sorted(sums)}


class RunLogger:
    """Writes scalars to train_log.jsonl and to the trackers; images to the trackers."""

    def __init__(self, accelerator, run_dir: Path, cfg: Config):
        self.accelerator, self.run_dir, self.cfg = accelerator, run_dir, cfg
        self.tracker = open_tracker(accelerator, run_dir, cfg, goes_on="training goes on, scalars stay in train_log.jsonl")
        # A resumed run re-trains the steps after its checkpoint; the steps logged before the
        # interruption are kept and not logged twice.
        path = RunFolder(run_dir).train_log
        self.last_logged_step = last_logged_step(path, warn=accelerator.is_main_process)
        if accelerator.is_main_process:
            self.jsonl = open_jsonl(path)  # closes a line cut by kill -9 first
            self.tracker.start_training()

    def log_scalars(self, values: dict, step: int) -> None:
        if not self.accelerator.is_main_process or step <= self.last_logged_step:
            return
        clean = {k: (v if math.isfinite(v) else None) for k, v in values.items()}
        self.jsonl.write({"step": step, **clean})
        self.tracker.log(values, step)

    def log_image(self, name: str, image, step: int) -> None:
        """image: a PIL image (uint8)."""
        if self.accelerator.is_main_process and step > self.last_logged_step:
            self.tracker.log_image(name, image, step)

    def log_checkpoint(self, path: Path) -> None:
        """With wandb.log_checkpoints=all: the checkpoint just written, aliases latest and step-N."""
        if self.accelerator.is_main_process and self.cfg.wandb.log_checkpoints == "all":
            self.tracker.log_checkpoint(path, ["latest", path.name])

    def mark_preempting(self) -> None:
        """Tell the tracker that this run stops to be requeued (SIGTERM/SIGUSR1); a failure only warns."""
        if self.accelerator.is_main_process:
            self.tracker.mark_preempting()

    def close(self) -> None:
        if self.accelerator.is_main_process:
            self.jsonl.close()
            self.tracker.finish(teardown=True)


def last_logged_step(path: Path, warn: bool = True) -> int:
    """The highest step in train_log.jsonl; 0 without one. A line cut by kill -9 is skipped (warning)."""
    return max((r["step"] for r in read_jsonl(path, warn=warn) if isinstance(r.get("step"), int)), default=0)


def peak_memory_mb(device: torch.device) -> float | None:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return None

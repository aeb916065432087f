"""Scalars and images: W&B (gan.wandb_run) plus DIR/train_log.jsonl; the window means behind them.

Only the main process writes. A tracker that fails to start or to log costs one warning,
never the run: the local files stay complete.
"""

import math
from pathlib import Path

import torch
from torchmetrics.aggregation import MeanMetric

from gan.config import Config, to_dict
from gan.files import open_jsonl, read_jsonl
from gan.run_folder import RunFolder
from gan.wandb_run import WandbRun, resolve_wandb_mode


class WindowMeans:
    """Mean of each scalar over the logging window and across processes (torchmetrics MeanMetric)."""

    def __init__(self, device):
        self.device = device
        self.metrics: dict[str, MeanMetric] = {}

    def update(self, values: dict) -> None:
        for name, value in values.items():
            if name not in self.metrics:
                # nan_strategy="disable": no per-update NaN check, i.e. no host sync in the step
                self.metrics[name] = MeanMetric(nan_strategy="disable").to(self.device)
            self.metrics[name].update(value)

    def compute(self) -> dict[str, float]:
        """Called on every process (it all-gathers under DDP); resets the window."""
        # A scalar with no update in this window (lazy R1 every k steps) is left out, not NaN; the
        # pattern of updates is the same on every process, so they all skip the same all-gather.
        out = {name: float(m.compute()) for name, m in sorted(self.metrics.items()) if m.update_count}
        for metric in self.metrics.values():
            metric.reset()
        return out


class RunLogger:
    """Writes scalars to train_log.jsonl and to the trackers; images to the trackers."""

    def __init__(self, accelerator, run_dir: Path, cfg: Config):
        self.accelerator, self.run_dir, self.cfg = accelerator, run_dir, cfg
        self.wandb = WandbRun(accelerator, goes_on="training goes on, scalars stay in train_log.jsonl")
        # A resumed run re-trains the steps after its checkpoint; the steps logged before the
        # interruption are kept and not logged twice.
        path = RunFolder(run_dir).train_log
        self.last_logged_step = last_logged_step(path, warn=accelerator.is_main_process)
        if accelerator.is_main_process:
            self.jsonl = open_jsonl(path)  # closes a line cut by kill -9 first
            self._start_wandb()

    def _start_wandb(self) -> None:
        mode = resolve_wandb_mode(self.cfg)
        if mode == "disabled" or "wandb" not in [str(t) for t in (self.accelerator.log_with or [])]:
            return
        w, id_file = self.cfg.wandb, RunFolder(self.run_dir).wandb_id
        try:
            from wandb.sdk.lib import runid

            run_id = id_file.read_text().strip() if id_file.exists() else runid.generate_id()
            id_file.write_text(run_id)
        except Exception as err:
            self.wandb.warn_once("init", err)
            return
        # One x-axis for training and for the evaluator's later metrics: no "step must increase".
        step_metrics = {"train/step": None, "train/kimg": "train/step", "*": "train/step"}
        tags = sorted({*w.tags, self.cfg.model.network, self.cfg.loss.name})
        name = w.name or self.run_dir.resolve().name
        self.wandb.start(self.run_dir, self.cfg, mode, run_id, step_metrics, config=to_dict(self.cfg),
                         group=w.group or self.cfg.preset, tags=tags, name=name)  # fmt: skip

    def log_scalars(self, values: dict, step: int) -> None:
        if not self.accelerator.is_main_process or step <= self.last_logged_step:
            return
        clean = {k: (v if math.isfinite(v) else None) for k, v in values.items()}
        self.jsonl.write({"step": step, **clean})
        self.wandb.log({**values, "train/step": step})

    def log_image(self, name: str, image, step: int) -> None:
        """image: a PIL image (uint8): wandb.Image renders float tensors all black."""
        if not (self.accelerator.is_main_process and self.wandb.ok) or step <= self.last_logged_step:
            return
        import wandb

        self.wandb.log({name: wandb.Image(image), "train/step": step})

    def log_checkpoint(self, path: Path) -> None:
        """With wandb.log_checkpoints=all: the checkpoint just written, aliases latest and step-N."""
        if self.accelerator.is_main_process and self.cfg.wandb.log_checkpoints == "all":
            run_id = RunFolder(self.run_dir).wandb_id.read_text().strip() if self.wandb.ok else ""
            self.wandb.log_checkpoint(path, run_id, ["latest", path.name])

    def mark_preempting(self) -> None:
        """Tell W&B that this run stops to be requeued (SIGTERM/SIGUSR1); a failure only warns."""
        if self.accelerator.is_main_process:
            self.wandb.mark_preempting()

    def close(self) -> None:
        if self.accelerator.is_main_process:
            self.jsonl.close()
            self.wandb.finish(teardown=True)


def last_logged_step(path: Path, warn: bool = True) -> int:
    """The highest step in train_log.jsonl; 0 without one. A line cut by kill -9 is skipped (warning)."""
    return max((r["step"] for r in read_jsonl(path, warn=warn) if isinstance(r.get("step"), int)), default=0)


def peak_memory_mb(device: torch.device) -> float | None:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return None

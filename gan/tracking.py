"""Scalars and images: W&B through Accelerate's tracker API, plus DIR/train_log.jsonl.

Only the main process writes. A tracker that fails to start or to log costs one warning,
never the run: the local files stay complete.
"""

import json
import math
import os
import warnings
from pathlib import Path

import torch
from torchmetrics.aggregation import MeanMetric

from gan.config import Config, to_dict

WANDB_ID_FILE = "wandb_run_id.txt"


def resolve_wandb_mode(cfg: Config) -> str:
    """WANDB_MODE wins; then wandb.mode; then online with an API key, offline without one."""
    env = os.environ.get("WANDB_MODE")
    if env:
        return env
    if cfg.wandb.mode:
        return cfg.wandb.mode
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    netrc = Path.home() / ".netrc"
    has_login = netrc.exists() and "api.wandb.ai" in netrc.read_text(errors="ignore")
    return "online" if has_login else "offline"


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
        self.tracker_ok = False
        self.warned = False
        # A resumed run re-trains the steps after its checkpoint; the steps logged before the
        # interruption are kept and not logged twice.
        self.last_logged_step = last_logged_step(run_dir / "train_log.jsonl")
        if accelerator.is_main_process:
            self.jsonl = open(run_dir / "train_log.jsonl", "a")
            self._start_wandb()

    def _warn_once(self, what: str, err: Exception) -> None:
        if not self.warned:
            warnings.warn(f"W&B {what} failed ({err.__class__.__name__}: {str(err)[:200]}); "
                          "training goes on, scalars stay in train_log.jsonl", stacklevel=3)  # fmt: skip
            self.warned = True

    def _start_wandb(self) -> None:
        mode = resolve_wandb_mode(self.cfg)
        if mode == "disabled" or "wandb" not in [str(t) for t in (self.accelerator.log_with or [])]:
            return
        w = self.cfg.wandb
        id_file = self.run_dir / WANDB_ID_FILE
        try:
            import wandb
            from wandb.sdk.lib import runid

            run_id = id_file.read_text().strip() if id_file.exists() else runid.generate_id()
            id_file.write_text(run_id)
            tags = sorted({*w.tags, self.cfg.model.network, self.cfg.loss.name})
            self.accelerator.init_trackers(
                w.project,
                config=to_dict(self.cfg),
                init_kwargs={"wandb": {
                    "id": run_id, "resume": "allow", "mode": mode, "dir": str(self.run_dir),
                    "entity": w.entity, "group": w.group or self.cfg.preset, "tags": tags,
                    "name": w.name or self.run_dir.resolve().name, "settings": wandb.Settings(silent=True),
                }},
            )  # fmt: skip
            run = self.accelerator.get_tracker("wandb", unwrap=True)
            # One x-axis for training and for the evaluator's later metrics: no "step must increase".
            run.define_metric("train/step")
            run.define_metric("train/kimg", step_metric="train/step")
            run.define_metric("*", step_metric="train/step")
            self.tracker_ok = True
        except Exception as err:  # no network, bad key, full disk: never stop training for W&B
            self._warn_once("init", err)

    def log_scalars(self, values: dict, step: int) -> None:
        if not self.accelerator.is_main_process or step <= self.last_logged_step:
            return
        clean = {k: (v if math.isfinite(v) else None) for k, v in values.items()}
        self.jsonl.write(json.dumps({"step": step, **clean}) + "\n")
        self.jsonl.flush()
        self._log({**values, "train/step": step}, step)

    def log_image(self, name: str, image, step: int) -> None:
        """image: a PIL image (uint8): wandb.Image renders float tensors all black."""
        if not (self.accelerator.is_main_process and self.tracker_ok) or step <= self.last_logged_step:
            return
        import wandb

        self._log({name: wandb.Image(image), "train/step": step}, step)

    def _log(self, values: dict, step: int) -> None:
        if not self.tracker_ok:
            return
        try:
            # W&B's own step counter keeps increasing; the x-axis is train/step (define_metric).
            self.accelerator.log(values)
        except Exception as err:
            self._warn_once("log", err)

    def mark_preempting(self) -> None:
        """Tell W&B that this run stops to be requeued (SIGTERM/SIGUSR1); a failure only warns."""
        if not (self.accelerator.is_main_process and self.tracker_ok):
            return
        try:
            self.accelerator.get_tracker("wandb", unwrap=True).mark_preempting()
        except Exception as err:
            self._warn_once("mark_preempting", err)

    def close(self) -> None:
        if self.accelerator.is_main_process:
            self.jsonl.close()
            if self.tracker_ok:
                try:
                    # Not accelerator.end_training(): it also destroys the process group, which the
                    # other processes still need to leave the loop together.
                    for tracker in self.accelerator.trackers:
                        tracker.finish()
                    import wandb

                    wandb.teardown()  # now, not in an atexit hook that a launcher's SIGTERM can cut short
                except Exception as err:
                    self._warn_once("finish", err)


def last_logged_step(path: Path) -> int:
    if not path.exists():
        return 0
    last = 0
    with open(path) as f:
        for line in f:
            try:
                last = max(last, int(json.loads(line)["step"]))
            except (ValueError, KeyError, TypeError):
                continue  # a line cut by kill -9
    return last


def peak_memory_mb(device: torch.device) -> float | None:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return None

"""The evaluator's numbers into the run's own W&B run, against train/step.

The run is resumed by the id training stored in RUN_DIR/wandb_run_id.txt (resume="allow"), with
its files in RUN_DIR/wandb, in the mode training would use (WANDB_MODE, else wandb.mode, else
online with an API key, offline without). No id file or mode "disabled": nothing is logged.
Like training, a W&B failure costs one warning, never the evaluation: metrics.jsonl stays complete.
"""

import warnings
from pathlib import Path

from gan.config import Config


class EvalLogger:
    def __init__(self, accelerator, run_dir: Path, cfg: Config):
        # gan.tracking imports torchmetrics (seconds): only once there is something to evaluate
        from gan.tracking import WANDB_ID_FILE, resolve_wandb_mode

        self.accelerator, self.ok, self.warned = accelerator, False, False
        id_file = Path(run_dir) / WANDB_ID_FILE
        mode = resolve_wandb_mode(cfg)
        if not accelerator.is_main_process or not id_file.exists() or mode == "disabled":
            return
        try:
            import wandb

            accelerator.init_trackers(cfg.wandb.project, init_kwargs={"wandb": {
                "id": id_file.read_text().strip(), "resume": "allow", "mode": mode, "dir": str(run_dir),
                "entity": cfg.wandb.entity, "settings": wandb.Settings(silent=True),
            }})  # fmt: skip
            run = accelerator.get_tracker("wandb", unwrap=True)
            run.define_metric("train/step")
            run.define_metric("eval/*", step_metric="train/step")
            self.ok = True
        except Exception as err:  # no network, bad key, full disk: never stop evaluating for W&B
            self._warn("init", err)

    def _warn(self, what: str, err: Exception) -> None:
        if not self.warned:
            warnings.warn(f"W&B {what} failed ({err.__class__.__name__}: {str(err)[:200]}); evaluation goes on, "
                          "the numbers stay in metrics.jsonl", stacklevel=3)  # fmt: skip
            self.warned = True

    def log(self, record: dict) -> None:
        if not self.ok:
            return
        values = {f"eval/{k}": record[k] for k in ("fid", "kid_mean", "kid_std", "is_mean", "is_std")
                  if record.get(k) is not None}  # fmt: skip
        try:
            self.accelerator.log({**values, "train/step": record["step"]})
        except Exception as err:
            self._warn("log", err)

    def close(self) -> None:
        if self.ok:
            try:  # the trackers only: runner.run ends the process group, on every process
                for tracker in self.accelerator.trackers:
                    tracker.finish()
            except Exception as err:
                self._warn("finish", err)

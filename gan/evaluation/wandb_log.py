"""The evaluator's numbers into the run's own W&B run (gan.wandb_run), against train/step.

The run is resumed by the id training stored in RUN_DIR/wandb_run_id.txt, in the mode training
would use (WANDB_MODE, else wandb.mode, else online with an API key, offline without). No id file
or mode "disabled": nothing is logged. Like training, a W&B failure costs one warning, never the
evaluation: metrics.jsonl stays complete.
"""

from pathlib import Path

from gan.config import Config
from gan.evaluation.metrics import wandb_names, wandb_summaries
from gan.run_folder import RunFolder
from gan.wandb_run import WandbRun, resolve_wandb_mode


class EvalLogger:
    def __init__(self, accelerator, run_dir: Path, cfg: Config):
        self.wandb = WandbRun(accelerator, goes_on="evaluation goes on, the numbers stay in metrics.jsonl")
        self.run_dir, self.run_id, self.cfg = Path(run_dir), "", cfg
        self.logged_best: int | None = None  # the step of the best checkpoint logged as an artifact
        id_file = RunFolder(Path(run_dir)).wandb_id
        mode = resolve_wandb_mode(cfg)
        if not accelerator.is_main_process or not id_file.exists() or mode == "disabled":
            return
        try:
            run_id = self.run_id = id_file.read_text().strip()
        except (OSError, ValueError) as err:  # unreadable, or not text
            self.wandb.warn_once("init", err)
            return
        self.wandb.start(run_dir, cfg, mode, run_id, {"train/step": None, "eval/*": "train/step"},
                         summaries=wandb_summaries())  # fmt: skip

    def log(self, record: dict) -> None:
        values = {name: record[key] for key, name in wandb_names().items() if record.get(key) is not None}
        self.wandb.log({**values, "train/step": record["step"]})

    def log_best(self, best: dict | None) -> None:
        """With wandb.log_checkpoints best or all: the checkpoint best.json names, alias best, once per change."""
        if best is None or self.cfg.wandb.log_checkpoints == "none" or best["step"] == self.logged_best:
            return
        self.wandb.log_checkpoint(RunFolder(self.run_dir).checkpoint(best["step"]), self.run_id, ["best"])
        self.logged_best = best["step"]

    def close(self) -> None:
        self.wandb.finish()  # runner.run ends the process group, on every process

"""The evaluator's numbers into the run's own tracker (gan.trackers: W&B or TensorBoard), against train/step.

The tracker is the one the run's config names (tracking.backend). W&B: the run is resumed by the
id training stored in RUN_DIR/wandb_run_id.txt, in the mode training would use (WANDB_MODE, else
wandb.mode, else online with an API key, offline without); no id file or mode "disabled": nothing
is logged. TensorBoard: another event file in RUN_DIR/tensorboard/. Like training, a tracker
failure costs one warning, never the evaluation: metrics.jsonl stays complete.
"""

from pathlib import Path

from gan.config import Config
from gan.evaluation.metrics import tracker_names, wandb_summaries
from gan.run_folder import RunFolder
from gan.trackers import open_tracker


class EvalLogger:
    def __init__(self, accelerator, run_dir: Path, cfg: Config):
        self.tracker = open_tracker(accelerator, run_dir, cfg, goes_on="evaluation goes on, the numbers stay in metrics.jsonl")
        self.run_dir, self.cfg = Path(run_dir), cfg
        self.logged_best: int | None = None  # the step of the best checkpoint logged as an artifact
        if accelerator.is_main_process:
            self.tracker.start_evaluation(summaries=wandb_summaries())

    def log(self, record: dict) -> None:
        values = {name: record[key] for key, name in tracker_names().items() if record.get(key) is not None}
        self.tracker.log(values, record["step"])

    def log_best(self, best: dict | None) -> None:
        """With wandb.log_checkpoints best or all: the checkpoint best.json names, alias best, once per change."""
        if best is None or self.cfg.wandb.log_checkpoints == "none" or best["step"] == self.logged_best:
            return
        self.tracker.log_checkpoint(RunFolder(self.run_dir).checkpoint(best["step"]), ["best"])
        self.logged_best = best["step"]

    def close(self) -> None:
        self.tracker.finish()  # runner.run ends the process group, on every process

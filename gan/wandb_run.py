"""A run folder's W&B run, through Accelerate's tracker API: training logs to it, the evaluator adds to it.

RUN_DIR/wandb_run_id.txt holds the run's id: a resumed training run and the evaluator's later
numbers join the same W&B run (resume="allow"), with its files in RUN_DIR/wandb. Every metric is
plotted against train/step. A tracker that fails to start, log or finish costs one warning, never
the run: the local JSONL files stay complete. Only the main process calls this module.
"""

import os
import warnings
from pathlib import Path

from gan.config import Config


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


class WandbRun:
    """The W&B tracker of one command; ok is False until it started, and again after a failed start."""

    def __init__(self, accelerator, goes_on: str):
        self.accelerator = accelerator
        self.goes_on = goes_on  # the end of the warning: what carries on, where the numbers stay
        self.ok = False
        self.warned = False

    def start(self, run_dir: Path, cfg: Config, mode: str, run_id: str, step_metrics: dict[str, str | None],
              config: dict | None = None, summaries: dict[str, str] | None = None, **wandb_kwargs) -> None:  # fmt: skip
        """init_trackers, then define_metric(name, step_metric=...) for each entry, in order, and
        define_metric(name, summary="min" or "max") for each of `summaries`."""
        try:
            import wandb

            self.accelerator.init_trackers(cfg.wandb.project, config=config, init_kwargs={"wandb": {
                "id": run_id, "resume": "allow", "mode": mode, "dir": str(run_dir),
                "entity": cfg.wandb.entity, "settings": wandb.Settings(silent=True), **wandb_kwargs,
            }})  # fmt: skip
            run = self.accelerator.get_tracker("wandb", unwrap=True)
            for name, step_metric in step_metrics.items():
                run.define_metric(name, step_metric=step_metric)
            for name, how in (summaries or {}).items():
                run.define_metric(name, summary=how)
            self.ok = True
        except Exception as err:  # no network, bad key, full disk: never stop the command for W&B
            self.warn_once("init", err)

    def warn_once(self, what: str, err: Exception) -> None:
        if not self.warned:
            warnings.warn(f"W&B {what} failed ({err.__class__.__name__}: {str(err)[:200]}); {self.goes_on}",
                          stacklevel=3)  # fmt: skip
            self.warned = True

    def log(self, values: dict) -> None:
        if not self.ok:
            return
        try:
            # W&B's own step counter keeps increasing; the x-axis is train/step (define_metric).
            self.accelerator.log(values)
        except Exception as err:
            self.warn_once("log", err)

    def log_checkpoint(self, path: Path, run_id: str, aliases: list[str]) -> None:
        """The checkpoint folder as a version of the run's model artifact `checkpoints-<run id>`, with
        these aliases (W&B moves an alias to the newest version that has it). Offline, the files are
        staged in the run's folder for `wandb sync`."""
        if not self.ok:
            return
        try:
            import wandb

            artifact = wandb.Artifact(f"checkpoints-{run_id}", type="model", metadata={"checkpoint": path.name})
            artifact.add_dir(str(path))
            self.accelerator.get_tracker("wandb", unwrap=True).log_artifact(artifact, aliases=aliases)
        except Exception as err:
            self.warn_once("log_artifact", err)

    def mark_preempting(self) -> None:
        """Tell W&B that this run stops to be requeued (SIGTERM/SIGUSR1)."""
        if not self.ok:
            return
        try:
            self.accelerator.get_tracker("wandb", unwrap=True).mark_preempting()
        except Exception as err:
            self.warn_once("mark_preempting", err)

    def finish(self, teardown: bool = False) -> None:
        """Finish the trackers. Not accelerator.end_training(): it also destroys the process group, which
        the other processes still need. teardown: end W&B's service now, not in an atexit hook that a
        launcher's SIGTERM can cut short."""
        if not self.ok:
            return
        try:
            for tracker in self.accelerator.trackers:
                tracker.finish()
            if teardown:
                import wandb

                wandb.teardown()
        except Exception as err:
            self.warn_once("finish", err)

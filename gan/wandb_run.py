"""A run folder's W&B run (tracking.backend=wandb), through Accelerate's tracker API; and the sweep agent.

RUN_DIR/wandb_run_id.txt holds the id of the W&B run, written from `run.id` once wandb.init has
made or rejoined it: a resumed training run and the evaluator's later numbers rejoin that run
(resume="allow"), with its files in RUN_DIR/wandb. A new run's id is wandb's choice; under a
`wandb agent` it is the agent's (WANDB_RUN_ID; wandb ignores `id=` inside a sweep). Every metric
is plotted against train/step.
"""

import os
from pathlib import Path

from gan.config import Config, to_dict
from gan.errors import GanError
from gan.files import write_atomic
from gan.run_folder import RunFolder
from gan.trackers import Tracker

# What `wandb agent` sets in the environment of each command it starts (wandb/wandb_agent.py),
# besides WANDB_SWEEP_PARAM_PATH (the run's parameters, which wandb.init reads into the run's config).
SWEEP_ID, RUN_ID = "WANDB_SWEEP_ID", "WANDB_RUN_ID"


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


def sweep_run() -> tuple[str, str] | None:
    """(sweep id, run id) when `wandb agent` started this command, else None."""
    sweep_id, run_id = os.environ.get(SWEEP_ID), os.environ.get(RUN_ID)
    if not sweep_id or not run_id:
        return None
    for name, value in ((SWEEP_ID, sweep_id), (RUN_ID, run_id)):
        if value in (".", "..") or "/" in value or "\\" in value:
            raise GanError(f"{name}={value!r} is not a plain name, so runs/<sweep id>/<run id> cannot be the run "
                           "folder; pass --run-dir")  # fmt: skip
    return sweep_id, run_id


class WandbRun(Tracker):
    """The W&B run of one command. WANDB_MODE=disabled or wandb.mode=disabled: none is started."""

    title = "W&B"

    def __init__(self, accelerator, run_dir: Path, cfg: Config, goes_on: str):
        super().__init__(accelerator, run_dir, cfg, goes_on)
        self.mode = resolve_wandb_mode(cfg)
        self.id_file = RunFolder(run_dir).wandb_id
        self.run_id = ""

    def start_training(self) -> None:
        if self.mode == "disabled":
            return
        w = self.cfg.wandb
        with self.guard("init"):
            # A new run's id is wandb's (under an agent, the agent's); a resumed run rejoins its own.
            run_id = (self.id_file.read_text().strip() or None) if self.id_file.exists() else None
            tags = sorted({*w.tags, self.cfg.model.network, self.cfg.loss.name})
            # under an agent the run keeps the name W&B gives a sweep's runs; else the run folder's name
            name = w.name or (None if sweep_run() else self.run_dir.resolve().name)
            # One x-axis for training and for the evaluator's later metrics: no "step must increase".
            step_metrics = {"train/step": None, "train/kimg": "train/step", "*": "train/step"}
            self._start(run_id, step_metrics, {}, config=to_dict(self.cfg), group=w.group or self.cfg.preset,
                        tags=tags, name=name)  # fmt: skip
            write_atomic(self.id_file, self.run_id)

    def start_evaluation(self, summaries: dict[str, str]) -> None:
        """Only into the run training made: without its id file, or disabled, nothing is logged."""
        if self.mode == "disabled" or not self.id_file.exists():
            return
        with self.guard("init"):
            run_id = self.id_file.read_text().strip()  # unreadable, or not text: one warning
            self._start(run_id, {"train/step": None, "eval/*": "train/step"}, summaries)

    def _start(self, run_id: str | None, step_metrics: dict[str, str | None], summaries: dict[str, str],
               config: dict | None = None, **wandb_kwargs) -> None:  # fmt: skip
        """init_trackers, then define_metric(name, step_metric=...) for each entry, in order, and
        define_metric(name, summary="min" or "max") for each of `summaries`."""
        import wandb

        self.accelerator.init_trackers(self.cfg.wandb.project, config=config, init_kwargs={"wandb": {
            "id": run_id, "resume": "allow", "mode": self.mode, "dir": str(self.run_dir),
            "entity": self.cfg.wandb.entity, "settings": wandb.Settings(silent=True), **wandb_kwargs,
        }})  # fmt: skip
        run = self.accelerator.get_tracker("wandb", unwrap=True)
        for name, step_metric in step_metrics.items():
            run.define_metric(name, step_metric=step_metric)
        for name, how in summaries.items():
            run.define_metric(name, summary=how)
        self.run_id, self.ok = run.id, True

    def log(self, values: dict, step: int) -> None:
        # W&B's own step counter keeps increasing; the x-axis is train/step (define_metric).
        if self.ok:
            with self.guard("log"):
                self.accelerator.log({**values, "train/step": step})

    def log_image(self, name: str, image, step: int) -> None:
        """image: a PIL image (uint8): wandb.Image renders float tensors all black."""
        if self.ok:
            import wandb

            self.log({name: wandb.Image(image)}, step)

    def log_checkpoint(self, path: Path, aliases: list[str]) -> None:
        """The checkpoint folder as a version of the run's model artifact `checkpoints-<run id>`, with
        these aliases (W&B moves an alias to the newest version that has it). Offline, the files are
        staged in the run's folder for `wandb sync`."""
        if not self.ok:
            return
        with self.guard("log_artifact"):
            import wandb

            artifact = wandb.Artifact(f"checkpoints-{self.run_id}", type="model", metadata={"checkpoint": path.name})
            artifact.add_dir(str(path))
            self.accelerator.get_tracker("wandb", unwrap=True).log_artifact(artifact, aliases=aliases)

    def mark_preempting(self) -> None:
        if self.ok:
            with self.guard("mark_preempting"):
                self.accelerator.get_tracker("wandb", unwrap=True).mark_preempting()

    def finish(self, teardown: bool = False) -> None:
        """teardown: end W&B's service now, not in an atexit hook that a launcher's SIGTERM can cut short."""
        if not self.ok:
            return
        super().finish()
        if teardown:
            with self.guard("finish"):
                import wandb

                wandb.teardown()

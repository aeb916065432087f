"""The run's tracker, through Accelerate's tracker API: W&B, TensorBoard or none (`tracking.backend`).

Training logs its scalars and sample grids to it, the evaluator adds its numbers to the same one,
all against train/step. The Accelerator is made with `**accelerator_options(cfg, RUN_DIR)`.
Only the main process calls this module. A tracker that fails to start, log or finish costs one
warning, never the command: the local JSONL files stay complete.
"""

import contextlib
import warnings
from pathlib import Path

from gan.config import Config, flatten, to_dict
from gan.run_folder import RunFolder


def accelerator_options(cfg: Config, run_dir: Path) -> dict:
    """Accelerator(**these): the tracker tracking.backend names; the run folder as the project folder and
    RUN_DIR/tensorboard as the logging folder, where Accelerate's TensorBoard tracker writes into the
    sub-folder named by init_trackers' project name (TensorBoardRun: train, evaluate)."""
    from accelerate.utils import ProjectConfiguration

    backend = cfg.tracking.backend
    folders = ProjectConfiguration(project_dir=str(run_dir), logging_dir=str(RunFolder(run_dir).tensorboard))
    return {"log_with": None if backend == "none" else backend, "project_config": folders}


def open_tracker(accelerator, run_dir: Path, cfg: Config, goes_on: str) -> "Tracker":
    """The tracker of tracking.backend, not started yet. goes_on: the end of a failure's warning
    (what carries on, and where the numbers stay)."""
    from gan.wandb_run import WandbRun  # it subclasses Tracker

    kind = {"wandb": WandbRun, "tensorboard": TensorBoardRun}.get(cfg.tracking.backend, Tracker)
    return kind(accelerator, Path(run_dir), cfg, goes_on)


class Tracker:
    """No tracker (tracking.backend=none): every call does nothing. A subclass starts one; ok is
    False until it started, and again after a failed start."""

    title = "tracker"  # the name in a warning

    def __init__(self, accelerator, run_dir: Path, cfg: Config, goes_on: str):
        self.accelerator, self.run_dir, self.cfg, self.goes_on = accelerator, run_dir, cfg, goes_on
        self.ok = False
        self.warned = False

    def start_training(self) -> None:
        """Start the run's tracker, or rejoin it on resume."""

    def start_evaluation(self, summaries: dict[str, str]) -> None:
        """Rejoin the run's tracker for the evaluator's numbers; summaries: {metric: "min" or "max"}."""

    def log(self, values: dict, step: int) -> None:
        if self.ok:
            with self.guard("log"):
                self.accelerator.log(values, step=step)

    def log_image(self, name: str, image, step: int) -> None:
        """image: a PIL image (uint8)."""

    def log_checkpoint(self, path: Path, aliases: list[str]) -> None:
        """A checkpoint folder as an artifact, where the tracker keeps files (W&B)."""

    def mark_preempting(self) -> None:
        """Tell the tracker that the run stops to be requeued (SIGTERM/SIGUSR1), where it has the notion."""

    def finish(self, teardown: bool = False) -> None:
        """Finish the trackers. Not accelerator.end_training(): it also destroys the process group, which
        the other processes still need. teardown: a backend's background service ends now (W&B)."""
        if self.ok:
            with self.guard("finish"):
                for tracker in self.accelerator.trackers:
                    tracker.finish()

    @contextlib.contextmanager
    def guard(self, what: str):
        """Any failure inside becomes one warning: no network, a bad key, a full disk never stop the command."""
        try:
            yield
        except Exception as err:
            self.warn_once(what, err)

    def warn_once(self, what: str, err: Exception) -> None:
        if not self.warned:
            message = f"{self.title} {what} failed ({err.__class__.__name__}: {str(err)[:200]}); {self.goes_on}"
            warnings.warn(message, stacklevel=4)  # 4: the caller's `with self.guard(...)`, past contextlib
            self.warned = True


class TensorBoardRun(Tracker):
    """Event files in RUN_DIR/tensorboard/train/ (training) and RUN_DIR/tensorboard/evaluate/ (the evaluator),
    the step of each value being train/step. One writer per folder: `evaluate.py --watch` beside training
    appends to its own files, which a TensorBoard that polls only a folder's newest file still reads."""

    title = "TensorBoard"

    def start_training(self) -> None:
        # The resolved config as TensorBoard hparams (Accelerate's store_init_configuration), which
        # take numbers, strings and booleans: a list is written as its text.
        hparams = {k: (str(v) if isinstance(v, list) else v) for k, v in flatten(to_dict(self.cfg)).items()}
        with self.guard("init"):
            self.accelerator.init_trackers("train", config=hparams)
            self.ok = True

    def start_evaluation(self, summaries: dict[str, str]) -> None:
        with self.guard("init"):
            self.accelerator.init_trackers("evaluate")
            self.ok = True

    def log_image(self, name: str, image, step: int) -> None:
        if self.ok:
            import numpy as np

            with self.guard("log"):
                pixels = np.asarray(image.convert("RGB"))[None]  # a batch of one (N, H, W, C) uint8 image
                self.accelerator.get_tracker("tensorboard").log_images({name: pixels}, step=step, dataformats="NHWC")

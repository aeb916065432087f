"""Which checkpoints to evaluate, the per-checkpoint loop and watch mode.

Under `accelerate launch` every process runs this loop. Decisions that read the file system
(the weights to use, which checkpoints are new, whether training finished) are made on the
main process and broadcast, so all processes evaluate the same checkpoints in the same order;
each process generates and extracts its share of the images (see features.py).
"""

import contextlib
import dataclasses
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list, gather_object

from gan import checkpoint as ckpt
from gan.checkpoint import load_generator
from gan.cli import is_main_process
from gan.config import Config
from gan.errors import GanError
from gan.evaluation import results
from gan.evaluation.features import create_extractor, generated_features
from gan.evaluation.inception import resolve_weights
from gan.evaluation.metrics import (
    DEFAULT_METRICS,
    MetricSettings,
    by_extractor,
    check_sizes,
    compute_by_extractor,
    feature_layers,
    metric,
    real_layer,
)
from gan.evaluation.real_stats import RealStats, real_images, real_stats
from gan.evaluation.reference import TRAIN, Reference, load_npz, reference_config, registered_images
from gan.evaluation.tracking import EvalLogger
from gan.run_folder import RunFolder, eval_lock, stored_config
from gan.samples import sample_latents
from gan.trackers import accelerator_options

ARCHITECTURE_KEYS = ("model", "data.resolution", "data.channels")


@dataclass
class EvalOptions:
    run_dir: Path
    metrics: tuple[str, ...] = DEFAULT_METRICS  # registered names, in registry order (parse_metrics)
    num_samples: int = 10000  # generated images per checkpoint
    num_real: int | None = None  # real images for the statistics; None = the whole training set
    checkpoints: str = "all"  # all, latest, or comma-separated steps
    watch: bool = False  # keep polling for new checkpoints until training finishes
    batch_size: int = 64  # images per generator and Inception batch, per process
    seed: int = 0  # noise seed of the generated images
    kid_subset_size: int = 1000  # images per KID subset (torch-fidelity's default)
    poll_seconds: float = 30.0  # --watch: seconds between looks for new checkpoints
    reference: Reference = Reference(TRAIN, TRAIN)  # what FID, KID and prc compare with (--reference)


def on_main(accelerator, fn):
    """fn() on the main process; its result, or its GanError, on every process."""
    result, error = None, None
    if accelerator.is_main_process:
        try:
            result = fn()
        except GanError as err:
            error = str(err)
    if accelerator.num_processes > 1:
        result, error = broadcast_object_list([result, error])
    if error:
        raise GanError(error)
    return result


# --------------------------------------------------------------------------- the run folder


def run_config(opts: EvalOptions, say=print) -> Config:
    """The run's config.yaml; --watch waits for a training run that has not written it yet, and says so
    (with say: a no-op on the processes other than the main one)."""
    run_dir = opts.run_dir
    if run_dir.exists() and not run_dir.is_dir():
        raise GanError(f"{str(run_dir)!r} is a file; give a run folder (the --run-dir of train.py)")
    waited = False
    config_file = RunFolder(run_dir).config
    while not config_file.exists():
        if not opts.watch:
            what = "does not exist" if not run_dir.exists() else "has no config.yaml"
            raise GanError(f"run folder {str(run_dir)!r} {what}; give the --run-dir of train.py")
        if not waited:
            say(f"waiting for {config_file} ...", flush=True)
            waited = True
        time.sleep(opts.poll_seconds)
    return stored_config(run_dir)


def training_finished(run_dir: Path) -> bool:
    """FINISHED exists and names at least the configured train.steps (a resumed, longer run is not finished)."""
    marker = RunFolder(run_dir).finished
    if not marker.exists():
        return False
    try:
        return int(marker.read_text().strip()) >= stored_config(run_dir).train.steps
    except (ValueError, OSError, GanError):
        return True


def parse_checkpoints(text: str) -> str | set[int]:
    if text in ("all", "latest"):
        return text
    try:
        steps = {int(s) for s in text.split(",") if s.strip()}
    except ValueError:
        steps = set()
    if not steps or min(steps) < 0:
        raise GanError(f"--checkpoints {text!r}: give all, latest, or comma-separated steps such as 500,1000")
    return steps


def pending(opts: EvalOptions, settings: dict, skipped) -> tuple[list[tuple[int, Path]], bool]:
    """(checkpoints to evaluate now, whether training had finished before they were listed)."""
    finished = training_finished(opts.run_dir)  # read first: the last checkpoint precedes FINISHED
    complete = ckpt.list_checkpoints(opts.run_dir)
    which = parse_checkpoints(opts.checkpoints)
    if not complete and not opts.watch:
        raise GanError(f"run folder {str(opts.run_dir)!r} has no complete checkpoint under checkpoints/ "
                       "(training writes one every train.checkpoint_every steps; --watch waits for them)")  # fmt: skip
    if which == "latest":
        chosen = complete[-1:]
    elif which == "all":
        chosen = complete
    else:
        chosen = [c for c in complete if c[0] in which]
        missing = sorted(which - {s for s, _ in complete})
        if missing and (finished or not opts.watch):
            have = ", ".join(str(s) for s, _ in complete) or "none"
            raise GanError(f"--checkpoints: no complete checkpoint for step(s) {', '.join(map(str, missing))} "
                           f"in {str(opts.run_dir / 'checkpoints')!r}; complete: {have}")  # fmt: skip
    done = results.evaluated_steps(results.read_records(opts.run_dir), settings)
    return [(s, p) for s, p in chosen if s not in done and s not in skipped], finished


@contextlib.contextmanager
def evaluation_turn(accelerator, run_dir: Path, say):
    """The main process holds the run's eval_lock while every process scores one checkpoint; the
    others wait for its decision (scored_meanwhile) in the broadcast that follows."""
    if not accelerator.is_main_process:
        yield
        return
    with eval_lock(run_dir, say=lambda text: say(text, file=sys.stderr)):
        yield


def scored_meanwhile(run_dir: Path, step: int, settings: dict) -> bool:
    """Whether another evaluator recorded this checkpoint with these settings after it was listed."""
    return step in results.evaluated_steps(results.read_records(run_dir), settings)


def check_architecture(ckpt_cfg: Config, run_cfg: Config, path: Path) -> None:
    """A checkpoint must come from this run's networks and image shape: the real statistics depend on it."""
    from gan.config import flatten, to_dict

    old, new = flatten(to_dict(run_cfg)), flatten(to_dict(ckpt_cfg))
    changed = [k for k in new if k.startswith(ARCHITECTURE_KEYS) and old.get(k) != new[k]]
    if changed:
        diffs = ", ".join(f"{k}={new[k]!r} (config.yaml: {old.get(k)!r})" for k in changed)
        raise GanError(f"checkpoint {path.name} was trained with {diffs}: a checkpoint from another run")


# --------------------------------------------------------------------------- one invocation


class Evaluator:
    """What one invocation shares across checkpoints. The extractors (one per extractor the metrics read:
    Inception, and others such as fd_mnist's classifier) and the real statistics (one per extractor whose
    metrics compare with real images) are built on first need, so a call that finds nothing new to
    evaluate loads none of them."""

    def __init__(self, accelerator, opts: EvalOptions, cfg: Config, settings: MetricSettings, weights, layers):
        self.accelerator, self.opts, self.cfg = accelerator, opts, cfg
        self.settings, self.weights, self.layers = settings, weights, layers
        self.groups = by_extractor(layers, settings.feature_extractor)  # {extractor: {metric: layer}}
        self.extractors: dict = {}  # {extractor name: torch-fidelity extractor}
        self.real: dict = {}  # {extractor name: RealStats} on the main process
        self.skipped: dict[int, str] = {}  # step -> why it could not be evaluated
        self.logger: EvalLogger | None = None  # W&B, started with the first result
        self.printed_header = False

    def print(self, *args, **kwargs) -> None:
        self.accelerator.print(*args, **kwargs, flush=True)

    def prepare(self) -> None:
        if self.extractors:
            return
        inception = self.settings.feature_extractor
        for name, layers in self.groups.items():  # an extractor other than Inception loads its own weights
            weights = self.weights if name == inception else None
            self.extractors[name] = create_extractor(weights, sorted(set(layers.values())), self.accelerator.device,
                                                     name)  # fmt: skip
        compared = {name: real_layer(layers) for name, layers in self.groups.items()}
        compared = {name: layer for name, layer in compared.items() if layer is not None}
        if not compared:  # no computed metric compares with the real images
            return
        ref = self.opts.reference
        if ref.kind == "npz":  # FID's statistics only (resolve_settings kept FID alone)
            layer = compared[inception]
            stats = load_npz(ref, layer)
            self.real[inception] = RealStats(None, stats["mu"], stats["sigma"], layer, ref.path, True)
            self.print(f"real-data statistics: mu and sigma from {ref.path}")
            return
        images, digest, real_cfg = self.reference_images()
        check_sizes(self.settings, self.layers.keys(), len(images), self.accelerator.num_processes)
        for name, layer in compared.items():
            extractor, start = self.extractors[name], time.perf_counter()
            # The cache key names the extractor and its weights: each extractor's statistics have their own file.
            tag = self.weights.tag if name == inception else extractor.weights_tag
            real = real_stats(real_cfg, images, digest, extractor, tag, layer, self.opts.batch_size, self.accelerator)
            if self.accelerator.is_main_process:
                self.real[name] = real
                seconds = time.perf_counter() - start
                how = "loaded from" if real.from_cache else f"computed in {seconds:.1f} s into"
                self.print(f"real-data statistics ({len(images)} images): {how} {real.path}")

    def reference_images(self) -> tuple:
        """(uint8 images, their digest, the config naming them in the cache key) of --reference."""
        ref, num_real = self.opts.reference, self.opts.num_real
        if ref.kind != "registered":
            return (*real_images(reference_config(ref, self.cfg), num_real), reference_config(ref, self.cfg))
        images = on_main(self.accelerator, lambda: registered_images(ref))  # downloaded once, by the main process
        digest = f"torch-fidelity:{ref.text}"
        if num_real is not None and num_real < len(images):
            pick = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))[:num_real].sort().values
            images, digest = images[pick], f"{digest}:random{num_real}:seed0"
        data = dataclasses.replace(self.cfg.data, name=ref.text, resolution=images.shape[-1], channels=images.shape[1])
        return images, digest, dataclasses.replace(self.cfg, data=data)

    def load(self, path: Path):
        """((G, meta), None) on every process, or (None, (kind, why)) on every process when any of them failed."""
        loaded, outcome = None, None
        try:
            G, ckpt_cfg, found = load_generator(path, self.accelerator.device)
            check_architecture(ckpt_cfg, self.cfg, path)
            self.check_image_shape(G, path)
            loaded = (G, found.meta)
        except GanError as err:
            # Rotation deletes old checkpoints while training runs: gone is not corrupt.
            outcome = ("gone", "removed (checkpoint rotation) before it was evaluated") if not path.exists() \
                else ("bad", str(err))  # fmt: skip
        outcomes = gather_object([outcome]) if self.accelerator.num_processes > 1 else [outcome]
        failures = [o for o in outcomes if o is not None]
        if not failures:
            return loaded, None
        return None, next((o for o in failures if o[0] == "bad"), failures[0])

    def check_image_shape(self, G, path: Path) -> None:
        shape = (self.cfg.data.channels, self.cfg.data.resolution, self.cfg.data.resolution)
        z, c = torch.zeros(1, G.z_dim), torch.zeros(1, dtype=torch.long)
        with torch.no_grad():
            got = tuple(G(z.to(self.accelerator.device), c.to(self.accelerator.device)).shape[1:])
        if got != shape:
            raise GanError(f"checkpoint {path.name} generates {got} images, the run's data are {shape}")

    def evaluate(self, step: int, path: Path) -> dict | None:
        """The record of one checkpoint (on the main process), or None when it was skipped."""
        loaded, failure = self.load(path)
        if failure is not None:
            kind, why = failure
            self.print(f"skipped {path.name}: {why}", file=sys.stderr)
            if kind == "bad":
                self.skipped[step] = why
            return None
        G, meta = loaded
        self.prepare()
        start = time.perf_counter()
        n = self.opts.num_samples
        # The same z for every checkpoint and world size; a conditional G gets random classes drawn by
        # the training data's class frequencies (the clusters' with data.pseudo_labels).
        z, c = sample_latents(n, G.z_dim, self.opts.seed, int(getattr(G, "num_classes", 0)), "random", G.class_counts)
        fake = generated_features(G, self.extractors, z, c, self.opts.batch_size, self.accelerator, path.name)
        if not self.accelerator.is_main_process:
            return None
        numbers = compute_by_extractor(fake, self.real, self.settings, self.groups)
        return {"step": step, "kimg": meta.get("kimg"), **numbers, "num_samples": n,
                "checkpoint": str(path.relative_to(self.opts.run_dir)), "settings": self.settings.as_dict(),
                "seconds": round(time.perf_counter() - start, 2)}  # fmt: skip

    def report(self, record: dict) -> None:
        """On the main process: metrics.jsonl, best.json, W&B and a table row."""
        results.append_record(self.opts.run_dir, record)
        best = results.update_best(self.opts.run_dir, record["settings"])
        if self.logger is None:
            self.logger = EvalLogger(self.accelerator, self.opts.run_dir, self.cfg)
        self.logger.log(record)
        self.logger.log_best(best)
        if not self.printed_header:
            self.print(results.table_header())
            self.printed_header = True
        self.print(results.table_row(record))


def resolve_settings(accelerator, opts: EvalOptions, cfg: Config):
    """(settings, weights, {metric: layer}). Without a classifier in the weights the metrics that need one
    (IS) are dropped, with one line saying why; the settings keep them, as requested. A metric that cannot
    read the run's images (fd_mnist on RGB) is refused before any weights or checkpoint is read."""
    ref = opts.reference
    for name in opts.metrics:
        metric(name).check_data(cfg.data)
        if metric(name).feature_extractor is not None and ref.kind not in (TRAIN, "folder"):
            raise GanError(f"--metrics {name} reads its own extractor's features of the run's images; --reference "
                           f"{ref.text} is not at the run's size: leave {name} out, or use --reference train or a folder")  # fmt: skip
    weights = on_main(accelerator, lambda: resolve_weights(cfg.eval.inception_weights))
    metrics = opts.metrics
    if not ref.has_features:  # an .npz: FID's mean and covariance, no features for KID or prc
        featureless = [m for m in metrics if metric(m).needs_real and m != "fid"]
        if featureless:
            metrics = tuple(m for m in metrics if m not in featureless)
            accelerator.print(f"{', '.join(featureless)} unavailable: --reference {ref.text} holds FID's mu and sigma, "
                              "not the reference's features")  # fmt: skip
        if not metrics:
            raise GanError(f"--metrics {','.join(opts.metrics)}: none can be computed against --reference {ref.text} "
                           "(an .npz serves FID, and IS needs no reference)")  # fmt: skip
    unavailable = [] if weights.has_classifier else [m for m in metrics if metric(m).needs_classifier]
    if unavailable:
        metrics = tuple(m for m in metrics if m not in unavailable)
        names = ", ".join(m.upper() for m in unavailable)
        computed = f" {' and '.join(m.upper() for m in metrics)} {'is' if len(metrics) == 1 else 'are'} computed."
        accelerator.print(f"{names} unavailable: the offline Inception weights ({weights.tag}, {weights.note}) have "
                          "no 1008-way classifier; set GAN_INCEPTION_WEIGHTS to torch-fidelity's "
                          f"weights-inception-2015-12-05-6726825d.pth for {names}.{computed if metrics else ''}")  # fmt: skip
        if not metrics:
            raise GanError(f"--metrics {','.join(opts.metrics)}: {names} cannot be computed with the offline "
                           "Inception weights (see above)")  # fmt: skip
    elif weights.note:
        accelerator.print(f"Inception weights: {weights.describe}; {weights.note}")
    settings = MetricSettings(metrics=opts.metrics, num_samples=opts.num_samples, num_real=opts.num_real,
                              seed=opts.seed, kid_subset_size=opts.kid_subset_size, weights=weights.tag,
                              reference=ref.text if ref.kind in (TRAIN, "registered") else str(ref.path))  # fmt: skip
    check_sizes(settings, metrics, opts.num_real or math.inf, accelerator.num_processes)
    return settings, weights, feature_layers(metrics, settings.feature_extractor)


def run(opts: EvalOptions) -> int:
    """Evaluate the chosen checkpoints of opts.run_dir; with --watch, until training finishes."""
    # The run's config before the Accelerator: its tracking.backend is the Accelerator's tracker.
    cfg = run_config(opts, say=print if is_main_process() else lambda *args, **kwargs: None)
    accelerator = Accelerator(**accelerator_options(cfg, opts.run_dir))
    try:
        return evaluate_run(opts, cfg, accelerator)
    finally:
        # Every process destroys the process group before the interpreter tears down: a gloo
        # process that exits with it alive can abort ("terminate called without an active exception").
        accelerator.state.destroy_process_group()


def evaluate_run(opts: EvalOptions, cfg: Config, accelerator) -> int:
    on_main(accelerator, lambda: results.check_writable(opts.run_dir))  # before minutes of Inception
    settings, weights, layers = resolve_settings(accelerator, opts, cfg)
    evaluator = Evaluator(accelerator, opts, cfg, settings, weights, layers)
    evaluated = 0
    if opts.watch:
        evaluator.print(f"watching {RunFolder(opts.run_dir).checkpoints} every {opts.poll_seconds:g} s until training "
                      "finishes (Ctrl-C stops)")  # fmt: skip
    try:
        while True:
            todo, finished = on_main(accelerator, lambda: pending(opts, settings.as_dict(), evaluator.skipped))
            for step, path in todo:
                with evaluation_turn(accelerator, opts.run_dir, evaluator.print):
                    if on_main(accelerator, lambda step=step: scored_meanwhile(opts.run_dir, step, settings.as_dict())):
                        continue
                    record = evaluator.evaluate(step, path)
                    if record is not None:
                        evaluator.report(record)
                        evaluated += 1
            if not opts.watch or finished:  # finished was read before listing: nothing can follow
                break
            time.sleep(opts.poll_seconds)
        accelerator.wait_for_everyone()  # no process leaves while the main one still computes and writes
    except KeyboardInterrupt:
        evaluator.print("stopped (Ctrl-C)")
        return 0 if opts.watch else 130
    finally:
        if evaluator.logger is not None:
            evaluator.logger.close()
    summarize(evaluator, evaluated)
    return 0


def summarize(evaluator: Evaluator, evaluated: int) -> None:
    """The best checkpoint, what was already there, and (as the exit status) what had to be skipped."""
    run_dir, settings = evaluator.opts.run_dir, evaluator.settings.as_dict()
    records, best = [], None
    if evaluator.accelerator.is_main_process:  # it reads, prints and writes; the others only exit with it
        records = [r for r in results.read_records(run_dir) if r.get("settings") == settings]
        best = results.update_best(run_dir, settings)  # also when nothing was new: best.json may be deleted
    if evaluated == 0 and records and not evaluator.skipped:
        evaluator.print(f"nothing new to evaluate: {len(records)} checkpoint(s) already in "
                      f"{RunFolder(run_dir).metrics} with these settings")  # fmt: skip
        evaluator.print(results.table_header())
        for record in sorted(records, key=lambda r: r["step"]):
            evaluator.print(results.table_row(record))
    if best is not None:
        evaluator.print(f"best: step {best['step']} (fid {best['fid']:.4g}) -> {RunFolder(run_dir).best}")
    if evaluator.skipped:
        listed = "; ".join(f"step {s}: {why}" for s, why in sorted(evaluator.skipped.items()))
        raise GanError(f"{len(evaluator.skipped)} checkpoint(s) could not be evaluated ({listed}); "
                       f"{evaluated} other(s) were evaluated")

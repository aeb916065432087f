"""The metrics: one module per metric in this package, plus what they share.

A metric is a `Metric` subclass in its own module, registered in `gan.registry.METRICS` under the
module's name: `fid.py` is `--metrics fid`. The registry lists the names from this folder's files
and imports a module only when its metric is looked up; `_`-modules would be shared helpers.
`is.py` is IS: `is` is a Python keyword, so no import statement can name that module, but the
registry imports it by its dotted name (importlib), which takes any file name; so `is` is a file
name, a `--metrics` name and the prefix of the record keys `is_mean`, `is_std`, as for every metric.

Here: the settings a number depends on (`MetricSettings`, whose `as_dict` is the key that decides
whether a checkpoint is evaluated again), `--metrics` parsing, and the loops over the requested
metrics that the runner, results.py and tracking.py call. The numbers come from the functions
torch-fidelity's `calculate_metrics` is built from, called with calculate_metrics' own defaults and
argument order (generated images are its input1, real ones input2). We call them on features that
several processes extracted, which calculate_metrics cannot take; tests/test_evaluate_metrics.py
checks that the numbers equal calculate_metrics' on the same image folders.
"""

import functools
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import torch

from gan.errors import GanError
from gan.evaluation.inception import EXTRACTOR
from gan.registry import METRICS

if TYPE_CHECKING:
    from gan.evaluation.real_stats import RealStats

DEFAULT_METRICS = ("fid", "kid", "is")  # without --metrics; part of the settings key, so a new metric is opt-in
KID_SUBSETS = 100  # torch-fidelity's default number of KID subsets
IS_SPLITS = 10  # torch-fidelity's default number of IS splits
RNG_SEED = 2020  # torch-fidelity's default seed for KID's subsets and IS's shuffle
# The generated images' features (Inception's 2048 pool values and 1008 logits, float32) and their
# noise are held for all --num-samples at once, then gathered on the main process.
FEATURE_BYTES = 4 * (2048 + 1008 + 1024)
FEATURE_MEMORY = 8 * 2**30


@dataclass(frozen=True)
class MetricSettings:
    """Everything a number depends on; a checkpoint evaluated with equal settings is not evaluated again."""

    metrics: tuple[str, ...]  # requested, in registry order (see ordered)
    num_samples: int  # generated images per checkpoint
    num_real: int | None  # real images; None = the whole training set
    seed: int  # seed of the noise vectors (and labels) of the generated images
    kid_subset_size: int  # images per KID subset
    weights: str  # the Inception weights' tag (see inception.InceptionWeights)
    feature_extractor: str = EXTRACTOR
    kid_subsets: int = KID_SUBSETS
    is_splits: int = IS_SPLITS
    reference: str = "train"  # what the real statistics come from (gan.evaluation.reference)

    def as_dict(self) -> dict:
        # A metric's own constants join the key only when it is requested: records of other metrics keep theirs.
        own = {key: value for name in self.metrics for key, value in metric(name).parameters.items()}
        settings = {**asdict(self), "metrics": list(self.metrics), **own}
        if self.reference == "train":  # the key records made before --reference existed have
            del settings["reference"]
        return settings


class Metric:
    """One metric, as the evaluator sees it. A module subclasses it, fills in the attributes and
    `compute` (and `check_sizes` where sample counts limit it), and registers the subclass:
    `@METRICS.register("fid")` in `fid.py`."""

    torch_fidelity_name: str  # torch-fidelity's name for it: its feature layer is the extractor's default for that
    order: int  # position in --metrics, the records, the console table and W&B: lower first
    columns: tuple[tuple[str, int], ...]  # (record key, console width) of each number it gives
    needs_real: bool = True  # compares with the real images (RealStats); False: generated images only
    needs_classifier: bool = False  # reads Inception's 1008-way logits, which the offline weights lack
    parameters: dict = {}  # constants its numbers depend on beyond MetricSettings': joined to the settings key
    feature_extractor: str | None = None  # torch-fidelity's registered extractor it reads; None: the Inception one
    summary: dict[str, str] = {}  # {record key: "min" or "max"}: W&B's run summary keeps the best, not the last

    @property
    def keys(self) -> tuple[str, ...]:
        """Its record keys: metrics.jsonl, best.json, compute's result."""
        return tuple(key for key, _ in self.columns)

    @property
    def tracker_names(self) -> dict[str, str]:
        """{record key: the tracker's key (W&B, TensorBoard)}, logged against train/step."""
        return {key: f"eval/{key}" for key in self.keys}

    def feature_layer(self, extractor_name: str) -> str:
        """The extractor's layer it reads, as torch-fidelity chooses it by default."""
        from torch_fidelity.utils import resolve_feature_layer_for_metric

        return resolve_feature_layer_for_metric(self.torch_fidelity_name, feature_extractor=extractor_name)

    def check_data(self, data) -> None:
        """A GanError when the run's data (its cfg.data) are images it cannot read; the default reads any."""

    def check_sizes(self, settings: MetricSettings, num_real: float) -> None:
        """A GanError naming the option to change when the sample counts are too small for it.
        num_real is math.inf until the real images are known."""

    def compute(self, fake: torch.Tensor, real: "RealStats | None", settings: MetricSettings) -> dict:
        """{key: number} for every key of `columns`; fake: the generated images' features (N, D) of
        its layer; real: the real statistics (None when no requested metric needs_real)."""
        raise NotImplementedError


@functools.cache
def metric(name: str) -> Metric:
    """The registered metric `name` (its module is imported on first use)."""
    return METRICS.get(name, "--metrics")()


def ordered() -> tuple[str, ...]:
    """Every registered metric's name, in `order`: the order of records, columns and settings."""
    return tuple(sorted(METRICS.names(), key=lambda name: (metric(name).order, name)))


def columns() -> tuple[tuple[str, int], ...]:
    return tuple(column for name in ordered() for column in metric(name).columns)


def tracker_names() -> dict[str, str]:
    return {key: logged for name in ordered() for key, logged in metric(name).tracker_names.items()}


def wandb_summaries() -> dict[str, str]:
    """{W&B key: "min" or "max"}: what the run's summary shows for each metric's main numbers."""
    return {metric(name).tracker_names[key]: how for name in ordered() for key, how in metric(name).summary.items()}


def parse_metrics(text: str) -> tuple[str, ...]:
    names = [m.strip().lower() for m in text.split(",") if m.strip()]
    known = ordered()
    unknown = [m for m in names if m not in known]
    if unknown or not names:
        raise GanError(f"--metrics: unknown metric {', '.join(unknown) or '(none given)'}; "
                       f"choose from: {', '.join(known)}")  # fmt: skip
    return tuple(m for m in known if m in names)


def check_sizes(settings: MetricSettings, metrics, num_real: float, num_processes: int) -> None:
    """Sample counts that `metrics` (those computed) can work with; messages name the option to change."""
    n = settings.num_samples
    most = FEATURE_MEMORY // FEATURE_BYTES
    if n > most:
        raise GanError(f"--num-samples {n} is too many: every generated image's features and noise are held in "
                       f"memory, at most {FEATURE_MEMORY // 2**30} GiB; give --num-samples <= {most}")  # fmt: skip
    if n < max(2, num_processes):
        raise GanError(f"--num-samples {n} is too small: FID needs at least 2 images, and every one of the "
                       f"{num_processes} processes needs one")  # fmt: skip
    for name in metrics:
        metric(name).check_sizes(settings, num_real)


def extractor_of(name: str, inception: str) -> str:
    """The extractor whose features metric `name` reads: its own feature_extractor, else `inception`."""
    return metric(name).feature_extractor or inception


def feature_layers(metrics: tuple[str, ...], extractor_name: str) -> dict[str, str]:
    """{metric: its feature layer}: of the extractor `extractor_name`, or of the metric's own (extractor_of)."""
    return {name: metric(name).feature_layer(extractor_of(name, extractor_name)) for name in metrics}


def by_extractor(layers: dict[str, str], extractor_name: str) -> dict[str, dict[str, str]]:
    """{extractor: {metric: layer}}: the metrics of `layers` grouped by the extractor they read
    (extractor_of), as the runner builds one extractor and one RealStats per group."""
    groups: dict[str, dict[str, str]] = {}
    for name, layer in layers.items():
        groups.setdefault(extractor_of(name, extractor_name), {})[name] = layer
    return groups


def real_layer(layers: dict[str, str]) -> str | None:
    """The layer of the real statistics: that of the metrics in `layers` (of one extractor) that need_real
    (None if none does). RealStats and its cache hold one layer's features, so those metrics must share it."""
    wanted = {layer for name, layer in layers.items() if metric(name).needs_real}
    if len(wanted) > 1:
        raise ValueError(f"the metrics {sorted(layers)} compare with real features of several layers "
                         f"{sorted(wanted)}; RealStats holds one")  # fmt: skip
    return wanted.pop() if wanted else None


def compute_metrics(fake: dict, real: "RealStats | None", settings: MetricSettings, layers: dict[str, str]) -> dict:
    """Every registered metric's keys (fid, kid_mean, kid_std, is_mean, is_std, ...), in registry
    order: numbers for the metrics in `layers`, None for the others; metrics of one extractor (several:
    compute_by_extractor).

    fake: {layer: features of the generated images}; real: RealStats (None when no metric needs it).
    """
    out = dict.fromkeys(key for key, _ in columns())
    for name, layer in layers.items():
        numbers = metric(name).compute(fake[layer], real, settings)
        if set(numbers) != set(metric(name).keys):
            raise ValueError(f"metric {name!r} computed {sorted(numbers)}, its columns are {list(metric(name).keys)}")
        out.update(numbers)
    return {k: (None if v is None else float(v)) for k, v in out.items()}


def compute_by_extractor(fake: dict, real: dict, settings: MetricSettings, groups: dict[str, dict[str, str]]) -> dict:
    """compute_metrics for the metrics of several extractors, in one record. Each argument is keyed by
    extractor first: fake {extractor: {layer: features}}, real {extractor: RealStats} (absent when none of
    its metrics needs it), groups {extractor: {metric: layer}} (by_extractor)."""
    out = dict.fromkeys(key for key, _ in columns())
    for extractor, layers in groups.items():
        numbers = compute_metrics(fake[extractor], real.get(extractor), settings, layers)
        out.update({key: numbers[key] for name in layers for key in metric(name).keys})
    return out

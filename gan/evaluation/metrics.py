"""The metric settings and the numbers.

The numbers come from the functions torch-fidelity's `calculate_metrics` is built from
(`fid_features_to_statistics`, `fid_statistics_to_metric`, `kid_features_to_metric`,
`isc_features_to_metric`), called with calculate_metrics' own defaults and argument order
(generated images are its input1, real ones input2). We call them on features that several
processes extracted, which calculate_metrics cannot take; tests/test_evaluate.py checks that the
numbers equal calculate_metrics' on the same image folders.
"""

from dataclasses import asdict, dataclass

from gan.errors import GanError
from gan.evaluation.inception import EXTRACTOR

METRICS = ("fid", "kid", "is")
TORCH_FIDELITY_NAME = {"fid": "fid", "kid": "kid", "is": "isc"}
KID_SUBSETS = 100  # torch-fidelity's default number of KID subsets
IS_SPLITS = 10  # torch-fidelity's default number of IS splits
RNG_SEED = 2020  # torch-fidelity's default seed for KID's subsets and IS's shuffle


@dataclass(frozen=True)
class MetricSettings:
    """Everything a number depends on; a checkpoint evaluated with equal settings is not evaluated again."""

    metrics: tuple[str, ...]  # requested, in METRICS order
    num_samples: int  # generated images per checkpoint
    num_real: int | None  # real images; None = the whole training set
    seed: int  # seed of the noise vectors (and labels) of the generated images
    kid_subset_size: int  # images per KID subset
    weights: str  # the Inception weights' tag (see inception.InceptionWeights)
    feature_extractor: str = EXTRACTOR
    kid_subsets: int = KID_SUBSETS
    is_splits: int = IS_SPLITS

    def as_dict(self) -> dict:
        return {**asdict(self), "metrics": list(self.metrics)}


def parse_metrics(text: str) -> tuple[str, ...]:
    names = [m.strip().lower() for m in text.split(",") if m.strip()]
    unknown = [m for m in names if m not in METRICS]
    if unknown or not names:
        raise GanError(f"--metrics: unknown metric {', '.join(unknown) or '(none given)'}; "
                       f"choose from: {', '.join(METRICS)}")  # fmt: skip
    return tuple(m for m in METRICS if m in names)


def check_sizes(settings: MetricSettings, metrics, num_real: float, num_processes: int) -> None:
    """Sample counts that `metrics` (those computed) can work with; messages name the option to change."""
    n, k = settings.num_samples, settings.kid_subset_size
    if n < max(2, num_processes):
        raise GanError(f"--num-samples {n} is too small: FID needs at least 2 images, and every one of the "
                       f"{num_processes} processes needs one")  # fmt: skip
    if "kid" in metrics and min(n, num_real) < k:
        which = f"--num-samples {n}" if n < k else f"the number of real images ({num_real}, --num-real)"
        raise GanError(f"{which} is smaller than KID's subset size {k}; give --kid-subset-size "
                       f"{int(min(n, num_real))} or less, or leave kid out of --metrics")  # fmt: skip
    if "is" in metrics and n < settings.is_splits:
        raise GanError(f"--num-samples {n} is smaller than IS's {settings.is_splits} splits; "
                       "give more samples or leave is out of --metrics")  # fmt: skip


def feature_layers(metrics: tuple[str, ...], extractor_name: str) -> dict[str, str]:
    """{metric: the extractor's feature layer for it}, as torch-fidelity chooses it by default."""
    from torch_fidelity.utils import resolve_feature_layer_for_metric

    return {m: resolve_feature_layer_for_metric(TORCH_FIDELITY_NAME[m], feature_extractor=extractor_name)
            for m in metrics}  # fmt: skip


def compute_metrics(fake: dict, real, settings: MetricSettings, layers: dict[str, str]) -> dict:
    """{fid, kid_mean, kid_std, is_mean, is_std}: None for a metric not in `layers`.

    fake: {layer: features of the generated images}; real: RealStats (unused for IS only).
    """
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_features_to_statistics, fid_statistics_to_metric
    from torch_fidelity.metric_isc import KEY_METRIC_ISC_MEAN, KEY_METRIC_ISC_STD, isc_features_to_metric
    from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric

    out = dict.fromkeys(("fid", "kid_mean", "kid_std", "is_mean", "is_std"))
    if "fid" in layers:
        stats = fid_features_to_statistics(fake[layers["fid"]])
        out["fid"] = fid_statistics_to_metric(stats, real.fid_statistics(), verbose=False)[KEY_METRIC_FID]
    if "kid" in layers:
        kid = kid_features_to_metric(fake[layers["kid"]], real.features, kid_subsets=settings.kid_subsets,
                                     kid_subset_size=settings.kid_subset_size, rng_seed=RNG_SEED, verbose=False)  # fmt: skip
        out["kid_mean"], out["kid_std"] = kid[KEY_METRIC_KID_MEAN], kid[KEY_METRIC_KID_STD]
    if "is" in layers:
        isc = isc_features_to_metric(fake[layers["is"]], settings.is_splits, shuffle=True, rng_seed=RNG_SEED)
        out["is_mean"], out["is_std"] = isc[KEY_METRIC_ISC_MEAN], isc[KEY_METRIC_ISC_STD]
    return {k: (None if v is None else float(v)) for k, v in out.items()}

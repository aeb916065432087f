"""KID (Bińkowski et al. 2018): the unbiased squared MMD between the generated and the real images'
Inception pool features under the kernel (x.y / d + 1)^3, averaged over random subsets of
--kid-subset-size images of each set (mean and standard deviation over the subsets)."""

import torch

from gan.errors import GanError
from gan.evaluation.metrics import RNG_SEED, Metric, MetricSettings
from gan.registry import METRICS


@METRICS.register("kid")
class KID(Metric):
    torch_fidelity_name = "kid"
    order = 1
    columns = (("kid_mean", 10), ("kid_std", 9))
    summary = {"kid_mean": "min"}

    def check_sizes(self, settings: MetricSettings, num_real: float) -> None:
        n, k = settings.num_samples, settings.kid_subset_size
        if min(n, num_real) < k:  # a subset is drawn from each set without replacement
            which = f"--num-samples {n}" if n < k else f"the number of real images ({num_real}, --num-real)"
            raise GanError(f"{which} is smaller than KID's subset size {k}; give --kid-subset-size "
                           f"{int(min(n, num_real))} or less, or leave kid out of --metrics")  # fmt: skip

    def compute(self, fake: torch.Tensor, real, settings: MetricSettings) -> dict:
        from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric

        kid = kid_features_to_metric(fake, real.features, kid_subsets=settings.kid_subsets,
                                     kid_subset_size=settings.kid_subset_size, rng_seed=RNG_SEED, verbose=False)  # fmt: skip
        return {"kid_mean": kid[KEY_METRIC_KID_MEAN], "kid_std": kid[KEY_METRIC_KID_STD]}

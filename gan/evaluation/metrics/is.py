"""IS (Salimans et al. 2016): exp(E_x KL(p(y|x) || p(y))) of Inception's 1008-way class
probabilities of the generated images, per split of a seeded shuffle (mean and standard deviation
over the splits). No real images.

`is` is a Python keyword: this module is imported only by its dotted name, through METRICS.get("is").
"""

import torch

from gan.errors import GanError
from gan.evaluation.metrics import RNG_SEED, Metric, MetricSettings
from gan.registry import METRICS


@METRICS.register("is")
class InceptionScore(Metric):
    torch_fidelity_name = "isc"
    order = 2
    columns = (("is_mean", 8), ("is_std", 8))
    summary = {"is_mean": "max"}
    needs_real = False
    needs_classifier = True

    def check_sizes(self, settings: MetricSettings, num_real: float) -> None:
        n = settings.num_samples
        if n < settings.is_splits:
            raise GanError(f"--num-samples {n} is smaller than IS's {settings.is_splits} splits; "
                           "give more samples or leave is out of --metrics")  # fmt: skip

    def compute(self, fake: torch.Tensor, real, settings: MetricSettings) -> dict:
        from torch_fidelity.metric_isc import KEY_METRIC_ISC_MEAN, KEY_METRIC_ISC_STD, isc_features_to_metric

        isc = isc_features_to_metric(fake, settings.is_splits, shuffle=True, rng_seed=RNG_SEED)
        return {"is_mean": isc[KEY_METRIC_ISC_MEAN], "is_std": isc[KEY_METRIC_ISC_STD]}

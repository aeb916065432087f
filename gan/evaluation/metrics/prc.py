"""Precision and recall (Kynkäänniemi et al. 2019) in Inception pool features: precision is the
share of generated images inside the real images' manifold (the union of balls around each real
feature reaching its k-th nearest real neighbour, k = 3), recall the share of real images inside
the generated images' manifold. Low recall with high precision is mode dropping, which FID folds
into one number.

torch-fidelity computes them (`prc` of calculate_metrics, with its defaults) from the real
features the cache holds.
"""

import torch

from gan.errors import GanError
from gan.evaluation.metrics import Metric, MetricSettings
from gan.registry import METRICS

NEIGHBORHOOD = 3  # torch-fidelity's default k of the k-th nearest neighbour that sets each ball's radius


@METRICS.register("prc")
class PrecisionRecall(Metric):
    torch_fidelity_name = "prc"
    order = 3
    columns = (("precision", 9), ("recall", 9))
    summary = {"precision": "max", "recall": "max"}
    parameters = {"prc_neighborhood": NEIGHBORHOOD}

    def check_sizes(self, settings: MetricSettings, num_real: float) -> None:
        n = settings.num_samples
        if min(n, num_real) <= NEIGHBORHOOD:  # each set needs a k-th nearest neighbour besides the image itself
            which = f"--num-samples {n}" if n <= NEIGHBORHOOD else f"the number of real images ({num_real}, --num-real)"
            raise GanError(f"{which} is too small for precision and recall: each set needs more than "
                           f"{NEIGHBORHOOD} images; give more, or leave prc out of --metrics")  # fmt: skip

    def compute(self, fake: torch.Tensor, real, settings: MetricSettings) -> dict:
        from torch_fidelity.metric_prc import KEY_METRIC_PRECISION, KEY_METRIC_RECALL, prc_features_to_metric

        # save_cpu_ram: distances in row batches; the whole N x N real matrix of 50,000 images would be 10 GB
        prc = prc_features_to_metric(fake, real.features, prc_neighborhood=NEIGHBORHOOD, save_cpu_ram=True,
                                     verbose=False)  # fmt: skip
        return {"precision": prc[KEY_METRIC_PRECISION], "recall": prc[KEY_METRIC_RECALL]}

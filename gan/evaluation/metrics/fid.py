"""FID (Heusel et al. 2017): the Fréchet distance between Gaussians fitted to the generated and the
real images' Inception pool features, |mu_g - mu_r|^2 + Tr(S_g + S_r - 2 (S_g S_r)^(1/2)).

The real mean and covariance come from the cached RealStats; torch-fidelity computes the rest.
"""

import torch

from gan.evaluation.metrics import Metric, MetricSettings
from gan.registry import METRICS


@METRICS.register("fid")
class FID(Metric):
    torch_fidelity_name = "fid"
    order = 0
    columns = (("fid", 10),)
    summary = {"fid": "min"}

    def compute(self, fake: torch.Tensor, real, settings: MetricSettings) -> dict:
        return {"fid": frechet_distance(fake, real)}


def frechet_distance(fake: torch.Tensor, real) -> float:
    """torch-fidelity's FID between Gaussians fitted to the generated features and the real statistics
    (RealStats) of the same extractor and layer; fd_mnist uses it in its classifier's features."""
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_features_to_statistics, fid_statistics_to_metric

    stats = fid_features_to_statistics(fake)
    return fid_statistics_to_metric(stats, real.fid_statistics(), verbose=False)[KEY_METRIC_FID]

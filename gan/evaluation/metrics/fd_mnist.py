"""fd_mnist: FID's Fréchet distance, |mu_g - mu_r|^2 + Tr(S_g + S_r - 2 (S_g S_r)^(1/2)), between Gaussians
fitted to the generated and the real images' features in the penultimate layer of a small MNIST classifier
(gan/evaluation/mnist_classifier.py) instead of Inception's pool layer.

A second feature space: FID can be lowered by matching what Inception attends to (ImageNet classes)
without better images (Kynkäänniemi et al. 2023); a classifier trained on the digits themselves does
not share those blind spots. Its input is 1-channel 28x28 digits, so other runs are refused. The real
statistics are cached as FID's, under the classifier's name and weights.
"""

import torch

from gan.errors import GanError
from gan.evaluation.metrics import Metric, MetricSettings
from gan.evaluation.metrics.fid import frechet_distance
from gan.evaluation.mnist_classifier import NAME, RESOLUTION, WEIGHTS_SHA256
from gan.registry import METRICS


@METRICS.register("fd_mnist")
class FrechetDistanceMnist(Metric):
    torch_fidelity_name = "fid"  # its layer: the classifier's default for FID, the penultimate features
    feature_extractor = NAME
    order = 4  # after prc
    columns = (("fd_mnist", 10),)
    summary = {"fd_mnist": "min"}
    parameters = {"fd_mnist_weights": WEIGHTS_SHA256}  # other classifier weights: other numbers, evaluate again

    def check_data(self, data) -> None:
        if (data.channels, data.resolution) != (1, RESOLUTION):
            raise GanError(f"--metrics fd_mnist needs 1-channel {RESOLUTION}x{RESOLUTION} images (its MNIST "
                           f"classifier's input); this run has data.resolution={data.resolution}, "
                           f"data.channels={data.channels}: leave fd_mnist out of --metrics")  # fmt: skip

    def compute(self, fake: torch.Tensor, real, settings: MetricSettings) -> dict:
        return {"fd_mnist": frechet_distance(fake, real)}

"""A small MNIST classifier as a torch-fidelity feature extractor, `mnist-classifier`: its penultimate
layer is the feature space of fd_mnist (gan/evaluation/metrics/fd_mnist.py).

The weights, mnist_classifier.safetensors beside this file, are written by `python -m bench.mnist_classifier`
(trained on the embedded mnist5k digits but those `held_out` gives). Loading checks their sha256 against
WEIGHTS_SHA256, the value fd_mnist adds to the settings key, so a changed file is refused by name
instead of silently changing the numbers.
"""

import hashlib
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from torch import nn
from torch_fidelity import register_feature_extractor
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.helpers import vassert

from gan.data import to_float
from gan.errors import GanError

NAME = "mnist-classifier"  # its name in torch-fidelity's registry of feature extractors
WEIGHTS = Path(__file__).with_name("mnist_classifier.safetensors")
# the sha256 of WEIGHTS: checked when they load, and part of the settings key of fd_mnist
WEIGHTS_SHA256 = "5f1dfadb310b0771dae5e95c718f3f02d5520a40cfc63f647497e1547cd371cd"
FEATURES = 64  # width of the penultimate layer: the features fd_mnist compares
RESOLUTION = 28  # the side of the digits it takes, px
HELD_OUT_PER_CLASS = 100  # the last 100 mnist5k digits of each class are never trained on: they measure its accuracy


class MnistClassifier(nn.Module):
    """Two 3x3 conv layers with max pooling (28 -> 14 -> 7 -> 3 px), a FEATURES-wide penultimate layer,
    ten logits. Input: float (B, 1, 28, 28) in [-1, 1], as gan.data.to_float gives."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(32 * 3 * 3, FEATURES), nn.ReLU(),
        )  # fmt: skip
        self.classify = nn.Linear(FEATURES, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(penultimate features (B, FEATURES), logits (B, 10))."""
        features = self.features(x)
        return features, self.classify(features)


def held_out(labels: torch.Tensor) -> torch.Tensor:
    """A boolean mask of the held-out digits: the last HELD_OUT_PER_CLASS of each class (mnist5k is sorted
    by class, so its last digits would all be 8s and 9s)."""
    mask = torch.zeros(len(labels), dtype=torch.bool)
    for digit in labels.unique():
        mask[(labels == digit).nonzero().flatten()[-HELD_OUT_PER_CLASS:]] = True
    return mask


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def load_weights(path: Path = WEIGHTS) -> dict[str, torch.Tensor]:
    """The state dict in `path`, whose sha256 must be WEIGHTS_SHA256."""
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise GanError(f"MNIST classifier weights {str(path)!r} cannot be read ({err.strerror or err}); reinstall "
                       "the package, or write them with python -m bench.mnist_classifier") from None  # fmt: skip
    found = hashlib.sha256(data).hexdigest()
    if found != WEIGHTS_SHA256:
        raise GanError(f"MNIST classifier weights {str(path)!r} have sha256 {found[:16]}..., fd_mnist is pinned to "
                       f"{WEIGHTS_SHA256[:16]}... (WEIGHTS_SHA256 in gan/evaluation/mnist_classifier.py)")  # fmt: skip
    try:
        return load_safetensors(data)
    except SafetensorError as err:
        raise GanError(f"MNIST classifier weights {str(path)!r} are not safetensors ({err})") from None


class FeatureExtractorMnistClassifier(FeatureExtractorBase):
    """torch-fidelity's interface: uint8 (B, 3, 28, 28) in, the requested features out, in the order asked.

    Features: str(FEATURES) (the penultimate layer, the default for fid, kid and prc) and "logits" (isc's).
    The evaluator repeats grayscale to 3 channels (gan.evaluation.features.extract); the classifier reads
    their mean, which is the digit again, bit for bit.
    """

    def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
        super().__init__(name, features_list)
        path = Path(feature_extractor_weights_path or WEIGHTS)
        self.model = MnistClassifier()
        self.model.load_state_dict(load_weights(path))
        self.weights_tag = f"{NAME}-{WEIGHTS_SHA256[:8]}"  # names the weights in the real-statistics cache key
        self.requires_grad_(False)
        self.eval()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        vassert(torch.is_tensor(x) and x.dtype == torch.uint8, "Expecting image as torch.Tensor with dtype=torch.uint8")
        vassert(x.dim() == 4 and x.shape[1:] == (3, RESOLUTION, RESOLUTION), f"Input is not Bx3x28x28: {x.shape}")
        features, logits = self.model(to_float(x.float().mean(1, keepdim=True)))  # exact: 3k / 3 = k
        found = {str(FEATURES): features, "logits": logits}
        return tuple(found[name] for name in self.features_list)

    @staticmethod
    def get_provided_features_list():
        return str(FEATURES), "logits"

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return {"fid": str(FEATURES), "kid": str(FEATURES), "prc": str(FEATURES), "isc": "logits"}[metric]

    @staticmethod
    def can_be_compiled():
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        return torch.zeros(1, 3, RESOLUTION, RESOLUTION, dtype=torch.uint8)


register_feature_extractor(NAME, FeatureExtractorMnistClassifier)

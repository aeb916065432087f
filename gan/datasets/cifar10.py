"""data.name=cifar10: torchvision's CIFAR-10 training split, downloaded into data.root."""

from gan.datasets._torchvision import TorchvisionSource
from gan.registry import DATASETS


class Cifar10(TorchvisionSource):
    name = "cifar10"
    cls_name = "CIFAR10"


@DATASETS.register("cifar10")
def cifar10(data_cfg) -> Cifar10:
    return Cifar10(data_cfg.root)

"""data.name=mnist: torchvision's MNIST training split, downloaded into data.root."""

from gan.datasets._torchvision import TorchvisionSource
from gan.registry import DATASETS


class Mnist(TorchvisionSource):
    name = "mnist"
    cls_name = "MNIST"


@DATASETS.register("mnist")
def mnist(data_cfg) -> Mnist:
    return Mnist(data_cfg.root)

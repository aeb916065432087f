"""The training data: a prepared data set (gan.prepared), memory-mapped, and batches drawn from it.

`data.name=prepared` reads a set made by `python -m gan.prepare`. Every other data set (gan.datasets)
is prepared on first use into the cache (gan.cache), keyed by its source, resolution and channels;
the main process of each node prepares while the others wait, and every later start reuses it.
A batch is one index into the memory map, with no per-sample decoding or transform.
"""

import contextlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from gan.errors import GanError, quote
from gan.prepared import RowReader, open_prepared, request_key, write_prepared
from gan.registry import DATASETS

TO_DEVICE_ROWS = 4096  # rows per slice when ImageData.to copies a memory map
ON_DEVICE_FRACTION = 0.25  # data.on_device copies a set to the GPU only below this share of its memory


@dataclass
class ImageData:
    images: np.ndarray | torch.Tensor  # uint8 (N, C, H, W): a read-only memory map, or a tensor on a device
    labels: torch.Tensor  # int64, (N,)
    num_classes: int
    digest: str = ""  # the content digest of these images (the prepared set's, and the selection)
    path: Path | None = None  # the prepared set
    rows: RowReader | None = None  # reads a memory map's rows for batches, without mapping them

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, index) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 images and labels at `index` (a sequence of ints)."""
        if isinstance(self.images, torch.Tensor):
            index = torch.as_tensor(index, device=self.images.device)
            return self.images[index], self.labels[index]
        index = np.asarray(index, dtype=np.int64)
        images = self.rows.read(index) if self.rows is not None else self.images[index]
        return torch.from_numpy(images), self.labels[torch.from_numpy(index)]

    def to(self, device) -> "ImageData":
        """The set on `device`. A memory map is copied in slices of TO_DEVICE_ROWS rows, so the host never
        holds a second whole copy (and no tensor ever views the read-only map)."""
        if isinstance(self.images, torch.Tensor):
            images = self.images.to(device)
        else:
            images = torch.empty(self.images.shape, dtype=torch.uint8, device=device)
            for start in range(0, len(images), TO_DEVICE_ROWS):
                rows = slice(start, start + TO_DEVICE_ROWS)
                images[rows] = as_tensor(self.images[rows])
        return ImageData(images, self.labels.to(device), self.num_classes, self.digest, self.path)


class BatchedImages(Dataset):
    """A map-style data set over ImageData; `__getitems__` fetches a whole batch in one index."""

    def __init__(self, data: ImageData):
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index):
        images, labels = self.data.batch([index])
        return images[0], labels[0]

    def __getitems__(self, indices):
        return self.data.batch(indices)


def keep_batch(batch):
    """collate_fn: `__getitems__` already returns stacked tensors."""
    return batch


def as_tensor(images) -> torch.Tensor:
    """uint8 images as a tensor: a memory map's rows are read (copied) now."""
    return images if isinstance(images, torch.Tensor) else torch.from_numpy(np.array(images))  # a writable copy


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1], the range of G's Tanh output."""
    return images.float().div_(127.5).sub_(1.0)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """float [-1, 1] -> uint8, quantised as torch-fidelity and StyleGAN do."""
    return (images.float() * 127.5 + 128).clamp(0, 255).to(torch.uint8)


def make_dataloader(data: ImageData, batch_size: int, pin_memory: bool = False) -> DataLoader:
    if len(data) < batch_size:
        raise GanError(f"train.batch_size={batch_size} is larger than the data set ({len(data)} images)")
    # drop_last: every batch is full, so no step ever sees a partial last batch.
    # A private generator: starting an epoch must not draw from the global RNG that z comes from,
    # or a resumed run would see different noise. Accelerate reseeds it with data_seed + epoch.
    return DataLoader(
        BatchedImages(data), batch_size=batch_size, shuffle=True, drop_last=True, collate_fn=keep_batch,
        generator=torch.Generator(), pin_memory=pin_memory,
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



# --------------------------------------------------------------------------- opening


def data_source(data_cfg):
    """The configured data set's Source (gan.datasets): cheap, reads no image."""
    return DATASETS.get(data_cfg.name, "data.name")(data_cfg)


def prepared_path(source, data_cfg) -> Path:
    """Where the set is prepared: data.root for data.name=prepared, else a cache folder."""
    if source.prepared:
        return source.path
    from gan.cache import cache_dir

    key = request_key(source, data_cfg.resolution, data_cfg.channels)
    return cache_dir("data") / f"{source.name}-{data_cfg.resolution}px-{data_cfg.channels}ch-{key}"


def build_data(cfg, source=None, first=contextlib.nullcontext, say=print) -> ImageData:
    """The configured data set, prepared once and memory-mapped, limited to data.limit images.

    `first`: a context manager under which this process goes first (Accelerate's
    local_main_process_first), so one process per node prepares and the others find the set ready.
    """
    source = source or data_source(cfg.data)
    path = prepared_path(source, cfg.data)
    with first():
        if source.prepared:
            prepared = open_prepared(path)
        elif (path / "manifest.json").is_file():
            prepared = open_prepared(path)
        else:
            say(f"preparing data.name={source.name} at {cfg.data.resolution} px into {path} (once; later starts reuse it)")
            try:
                prepared = write_prepared(source, path, cfg.data.resolution, cfg.data.channels, say=say)
            except OSError as err:  # a full or read-only cache disk
                raise GanError(f"data.name={source.name} cannot be prepared into {quote(str(path))}: "
                               f"{err.strerror or err}; free space or set GAN_CACHE_DIR, then start again "
                               "(the work done so far is kept)") from None  # fmt: skip
    check_shape(prepared, cfg.data)
    images, labels = prepared.images, prepared.labels
    digest = prepared.digest
    if cfg.data.limit is not None and cfg.data.limit < len(images):
        images, labels = images[: cfg.data.limit], labels[: cfg.data.limit]
        digest = f"{digest}:first{cfg.data.limit}"
    labels = torch.from_numpy(np.array(labels))
    return ImageData(images, labels, prepared.num_classes, digest, path, RowReader(prepared.images))


def check_shape(prepared, data_cfg) -> None:
    found = prepared.manifest
    if (found["resolution"], found["channels"]) != (data_cfg.resolution, data_cfg.channels):
        raise GanError(f"data.root={quote(str(prepared.path))} is prepared at {found['resolution']} px with "
                       f"{found['channels']} channel(s), but data.resolution={data_cfg.resolution} and "
                       f"data.channels={data_cfg.channels}: set those, or prepare the set again")  # fmt: skip


def place_data(data: ImageData, device, on_device: bool, say=print) -> tuple[ImageData, bool]:
    """(data, pin_memory): with data.on_device on a GPU, the whole set in GPU memory when it takes
    under ON_DEVICE_FRACTION of it, so batches are indexed there; otherwise batches are read from
    the memory map into pinned host memory and copied without blocking, one batch ahead (Accelerate's
    data loader fetches the next batch before it yields the current one)."""
    device = torch.device(device)
    if device.type == "cpu":
        return data, False
    size = data.images.nbytes
    if device.type == "cuda":
        budget = ON_DEVICE_FRACTION * torch.cuda.get_device_properties(device).total_memory
        if on_device and size <= budget:
            say(f"data.on_device: the data set ({size / 2**30:.2f} GiB) is copied to the GPU")
            return data.to(device), False
        why = "data.on_device=false" if not on_device else (
            f"{size / 2**30:.2f} GiB is over {ON_DEVICE_FRACTION:.0%} of the GPU's {budget / ON_DEVICE_FRACTION / 2**30:.0f} GiB")
        say(f"data: batches stream from pinned host memory ({why})")
        return data, True
    return (data.to(device), False) if on_device else (data, False)

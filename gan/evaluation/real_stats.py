"""Real-data statistics: computed once per data set and settings, cached, shared across runs.

They are the real images' Inception features (KID needs them all) and FID's mean and covariance.
The cache key names the data set, resolution, channels, sample count and extractor with its
weights, plus the content digest of the selected images (from the prepared set's manifest), so an
edited image folder never gets stale statistics. The file is safetensors (no pickle), written to a temporary name and renamed.
"""

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from gan.cache import cache_dir, write_to_cache
from gan.config import Config
from gan.data import build_data
from gan.errors import GanError
from gan.evaluation.features import image_features

REAL_SUBSET_SEED = 0  # which real images a --num-real subset takes; fixed so the cache key means one set


@dataclass
class RealStats:
    features: torch.Tensor  # float32 (N, D): the `layer` features of the real images
    mu: np.ndarray  # FID statistics, as torch-fidelity's fid_features_to_statistics returns them
    sigma: np.ndarray
    layer: str  # the extractor's feature layer, e.g. "2048"
    path: Path  # the cache file
    from_cache: bool

    def fid_statistics(self) -> dict:
        return {"mu": self.mu, "sigma": self.sigma}


def real_images(cfg: Config, num_real: int | None) -> tuple:
    """The run's training images (uint8, N x C x H x W), all of them (the prepared set's memory map)
    or a fixed random subset (read into memory), and the digest that names exactly those images."""
    data = build_data(cfg)
    images = data.images
    if num_real is None or num_real == len(images):
        return images, data.digest
    if num_real > len(images):
        raise GanError(f"--num-real {num_real} is larger than the data set ({len(images)} images of "
                       f"data.name={cfg.data.name}, data.limit={cfg.data.limit})")  # fmt: skip
    pick = torch.randperm(len(images), generator=torch.Generator().manual_seed(REAL_SUBSET_SEED))[:num_real]
    return data.batch(pick.sort().values.tolist())[0], f"{data.digest}:random{num_real}:seed{REAL_SUBSET_SEED}"


def cache_path(cfg: Config, images, digest: str, extractor_name: str, weights_tag: str, layer: str) -> Path:
    """<data>-<res>px-<channels>ch-<N>-<extractor>-<hash>.safetensors under the cache's real-stats/.

    The hash covers the images' content digest (the prepared set's, with the selection), so an
    edited image folder, prepared again, never gets stale statistics."""
    key = {
        "data": cfg.data.name, "resolution": cfg.data.resolution, "channels": cfg.data.channels,
        "num_images": len(images), "extractor": extractor_name, "weights": weights_tag, "layer": layer,
        "images_digest": digest,
    }  # fmt: skip
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    name = f"{cfg.data.name}-{cfg.data.resolution}px-{cfg.data.channels}ch-{len(images)}-{extractor_name}-{digest}"
    return cache_dir("real-stats") / f"{name}.safetensors"


def load_cached(path: Path, layer: str) -> RealStats | None:
    """The cached statistics, or None when the file is missing or unreadable (it is then recomputed)."""
    try:
        tensors = load_file(path)
    except (FileNotFoundError, SafetensorError, OSError, ValueError):
        return None
    if not {"features", "mu", "sigma"} <= tensors.keys():
        return None
    return RealStats(tensors["features"], tensors["mu"].numpy(), tensors["sigma"].numpy(), layer, path, True)


def compute_and_cache(extractor, images: torch.Tensor, layer: str, path: Path, batch_size: int,
                      accelerator) -> RealStats | None:  # fmt: skip
    """Every process extracts its share; the main process computes FID's statistics and writes the file."""
    from torch_fidelity.metric_fid import fid_features_to_statistics

    features = image_features(extractor, images, batch_size, accelerator)[layer]
    if not accelerator.is_main_process:
        return None
    stats = fid_features_to_statistics(features)
    tensors = {"features": features.contiguous(), "mu": torch.from_numpy(np.ascontiguousarray(stats["mu"])),
               "sigma": torch.from_numpy(np.ascontiguousarray(stats["sigma"]))}  # fmt: skip
    write_to_cache(path, lambda tmp: save_file(tensors, tmp, metadata={"layer": layer}))
    return RealStats(features, stats["mu"], stats["sigma"], layer, path, False)


def real_stats(cfg: Config, images, digest: str, extractor, weights_tag: str, layer: str, batch_size: int,
               accelerator) -> RealStats | None:  # fmt: skip
    """The real statistics on the main process (None elsewhere): from the cache, else computed and cached."""
    from accelerate.utils import broadcast_object_list

    path = cache_path(cfg, images, digest, extractor.get_name(), weights_tag, layer)
    cached = load_cached(path, layer) if accelerator.is_main_process else None
    hit = cached is not None
    if accelerator.num_processes > 1:
        hit = broadcast_object_list([hit])[0]
    if hit:
        return cached
    return compute_and_cache(extractor, images, layer, path, batch_size, accelerator)

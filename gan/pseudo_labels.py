"""Self-conditioning (Liu et al., "Diverse Image Generation via Self-Conditioned GANs", 2020).

With data.pseudo_labels=K a conditional network trains on the ids of K k-means clusters of the
training images instead of the data's own labels, so it needs no labels: an unconditional model.
G draws an id for each image by the clusters' frequencies (the checkpoint's class_counts).

The features are each image's pixels averaged over blocks to at most FEATURE_SIDE px a side, in
[0, 1]. scikit-learn's KMeans is fitted on at most FIT_IMAGES images drawn with the run's seed,
then every image is assigned to its nearest centre, CHUNK images at a time, so a memory-mapped set
is read a chunk at a time and never held whole. The main process clusters when the run starts and
stores the result in the run folder (RunFolder.pseudo_labels); the other processes, and every
resume, read that file back, so a run's ids never change. It holds the ids, the centres, and the
digest of the data they were made for: a file made for other data, or torn, is refused.
"""

import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from gan.errors import GanError, quote
from gan.files import write_atomic

FEATURE_SIDE = 16  # px: 28 px MNIST -> 14 x 14 = 196 features; 256 px RGB -> 16 x 16 x 3 = 768
FIT_IMAGES = 20_000  # k-means is fitted on at most this many images; all are then assigned
CHUNK = 4096  # images read and assigned at a time
N_INIT = 3  # k-means restarts; the one with the lowest inertia is kept


def features(images) -> np.ndarray:
    """uint8 (n, C, H, W) -> float32 (n, C * h * w), block means at most FEATURE_SIDE px a side."""
    x = torch.from_numpy(np.asarray(images, dtype=np.float32) / 255)
    factor = -(-x.shape[-1] // FEATURE_SIDE)  # ceil: 28 px -> 2, 256 px -> 16
    if factor > 1:
        x = F.avg_pool2d(x, factor, ceil_mode=True)
    return x.flatten(1).numpy()


def cluster(images, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids int64 (N,), centres float32 (k, D)) of k-means on `images` (uint8 (N, C, H, W))."""
    from sklearn.cluster import KMeans

    n = len(images)
    rng = np.random.default_rng(seed)
    fit = np.sort(rng.choice(n, FIT_IMAGES, replace=False)) if n > FIT_IMAGES else np.arange(n)
    kmeans = KMeans(n_clusters=k, n_init=N_INIT, random_state=seed).fit(features(images[fit]))
    ids = np.concatenate([kmeans.predict(features(images[i : i + CHUNK])) for i in range(0, n, CHUNK)])
    return ids.astype(np.int64), kmeans.cluster_centers_.astype(np.float32)


def save(path: Path, ids: np.ndarray, centres: np.ndarray, digest: str) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, ids=ids, centres=centres, digest=np.array(digest))

    write_atomic(path, write)


def load(path: Path, n: int, k: int, digest: str) -> np.ndarray:
    """The stored ids, checked against this run's data (n images, k clusters, its digest)."""
    try:
        with np.load(path, allow_pickle=False) as saved:
            ids, centres, made_for = saved["ids"], saved["centres"], str(saved["digest"])
        k_found = len(centres)
    except (OSError, ValueError, KeyError, EOFError, TypeError, zipfile.BadZipFile) as err:
        raise GanError(f"{quote(str(path))} is not a readable pseudo-label file ({err}); move it away to cluster "
                       "again (the run's checkpoints were trained on its ids)") from None  # fmt: skip
    if made_for != digest or ids.shape != (n,) or ids.dtype != np.int64 or k_found != k:
        raise GanError(f"{quote(str(path))} holds {k_found} clusters of {ids.size} images of data "
                       f"{made_for[:16]}, but this run has data.pseudo_labels={k} and {n} images of data "
                       f"{digest[:16]}: use the run's own data, or another --run-dir")  # fmt: skip
    if n and (ids.min() < 0 or ids.max() >= k):
        raise GanError(f"{quote(str(path))} holds cluster ids outside [0, {k - 1}]; move it away to cluster again")
    return ids


def check_clusters(k: int | None, n: int) -> None:
    """Before the run folder is touched: k clusters need at least k images."""
    if k and n < k:
        raise GanError(f"data.pseudo_labels={k} asks for more clusters than the data set has images ({n})")


def pseudo_label(data, k: int, seed: int, path: Path, is_main: bool, wait, say=print):
    """`data` (gan.data.ImageData) with its labels replaced by the ids of k clusters, made once per run.

    `wait`: a barrier of all processes (Accelerate's wait_for_everyone); the main process writes
    `path` before it, every process reads it after. check_clusters has run."""
    failed = None
    if is_main and not path.is_file():
        say(f"data.pseudo_labels={k}: k-means on {len(data)} images (once; stored in {path})")
        ids, centres = cluster(data.images, k, seed)
        try:
            save(path, ids, centres, data.digest)
        except OSError as err:  # a full disk: said after the barrier, which the others wait at
            failed = GanError(f"{quote(str(path))} cannot be written ({err.strerror or err}); free space and "
                              "run the same command again")  # fmt: skip
    wait()
    if failed is not None:
        raise failed
    ids = load(path, len(data), k, data.digest)  # the other processes: a missing file stops them too
    return type(data)(data.images, torch.from_numpy(ids), k, data.digest, data.path, data.rows)


def class_counts(labels: torch.Tensor, num_classes: int) -> list[int]:
    """Images per class: the frequencies G draws classes by when it generates."""
    return torch.bincount(labels.cpu(), minlength=num_classes).tolist() if num_classes else []

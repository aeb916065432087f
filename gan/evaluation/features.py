"""Inception features (and those of any other torch-fidelity extractor) of real and generated images,
split across processes.

torch-fidelity's `calculate_metrics` extracts features in one process only. Here each process
takes a contiguous share of the images (or of the noise vectors), runs torch-fidelity's own
feature extractor on it batch by batch, and the shares are gathered back in order. Every image
is seen exactly once and its features do not depend on its neighbours, so the gathered features,
and the metrics computed from them, are the same for any number of processes and batch size.
"""

from contextlib import contextmanager

import torch
from tqdm.auto import tqdm

from gan.data import as_tensor, to_uint8
from gan.errors import GanError
from gan.evaluation.inception import EXTRACTOR, InceptionWeights

# TF32 in Inception's convolutions and matmuls on NVIDIA GPUs. Off: its FID drift exceeds the 1e-4
# relative drift we accept (docs/performance.md, measured by bench/gpu.py).
INCEPTION_TF32 = False


@contextmanager
def inception_precision():
    """PyTorch's TF32 switches set to INCEPTION_TF32 while features are extracted, then restored
    (training turns TF32 on by default; cuDNN's convolutions use it unless told otherwise)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = INCEPTION_TF32
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def create_extractor(weights: InceptionWeights | None, layers: list[str], device, name: str = EXTRACTOR):
    """torch-fidelity's registered extractor `name`, producing `layers`, on `device`."""
    from torch_fidelity.utils import create_feature_extractor

    path = str(weights.path) if weights is not None else None
    try:
        extractor = create_feature_extractor(name, list(layers), cuda=False, feature_extractor_weights_path=path,
                                             verbose=False)  # fmt: skip
    except (RuntimeError, OSError, EOFError) as err:
        raise GanError(f"Inception weights {path!r} do not load into torch-fidelity's {name} "
                       f"({str(err).splitlines()[0][:160]})") from None  # fmt: skip
    return extractor.to(device)


def progress(total: int, what: str, accelerator):
    """A bar of images done, with an ETA, on the main process when stderr is a terminal (tqdm's
    disable=None); silent elsewhere, so logs and SLURM's files stay clean. Counts this process's share."""
    return tqdm(total=total, desc=what, unit="img", disable=None if accelerator.is_main_process else True,
                leave=False, dynamic_ncols=True)  # fmt: skip


def share(n: int, accelerator) -> slice:
    """This process's contiguous share of n items; shares differ in size by at most one."""
    rank, world = accelerator.process_index, accelerator.num_processes
    return slice(n * rank // world, n * (rank + 1) // world)


def extract(extractor, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """One batch of uint8 (B, C, H, W) images -> {layer: float32 (B, D)} on the CPU."""
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)  # Inception takes RGB: grayscale repeated to 3 channels
    features = extractor(images)
    return {k: v.cpu() for k, v in extractor.convert_features_tuple_to_dict(features).items()}


def _concat(batches: list[dict]) -> dict[str, torch.Tensor]:
    return {k: torch.cat([b[k] for b in batches]) for k in batches[0]}


@torch.no_grad()
def image_features(extractor, images: torch.Tensor, batch_size: int, accelerator) -> dict[str, torch.Tensor]:
    """Features of uint8 images, a tensor or a prepared set's memory map read batch by batch (all
    processes pass all images; each extracts its share)."""
    mine = images[share(len(images), accelerator)]
    batches = []
    with inception_precision(), progress(len(mine), "real images", accelerator) as bar:
        for i in range(0, len(mine), batch_size):
            batch = as_tensor(mine[i : i + batch_size]).to(accelerator.device)
            batches.append(extract(extractor, batch))
            bar.update(len(batch))
    return gather_rows(_concat(batches), len(images), accelerator)


@torch.no_grad()
def generated_features(G, extractors: dict, z, labels, batch_size: int, accelerator,
                       what: str = "generated") -> dict[str, dict]:  # fmt: skip
    """{extractor name: {layer: features}} of G's images for every (z, label), from each of `extractors`
    ({name: extractor}); each process generates its share once and every extractor reads each batch.
    `what` names the progress bar (the checkpoint).

    Images are quantised to uint8 as torch-fidelity and StyleGAN do, `(x * 127.5 + 128).clamp(0, 255)`,
    one batch at a time, so memory does not grow with the number of samples.
    """
    n = len(z)
    part = share(n, accelerator)
    z, labels = z[part].to(accelerator.device), labels[part].to(accelerator.device)
    batches = []
    with inception_precision(), progress(len(z), what, accelerator) as bar:
        for i in range(0, len(z), batch_size):
            images = to_uint8(G(z[i : i + batch_size], labels[i : i + batch_size]))
            batches.append({name: extract(extractor, images) for name, extractor in extractors.items()})
            bar.update(len(images))
    return {name: gather_rows(_concat([b[name] for b in batches]), n, accelerator) for name in extractors}


def gather_rows(local: dict[str, torch.Tensor], n: int, accelerator) -> dict[str, torch.Tensor]:
    """Concatenate every process's rows in rank order; all processes get all n rows.

    Needs n >= the number of processes (every share non-empty); the runner checks it.
    """
    if accelerator.num_processes == 1:
        return local
    world = accelerator.num_processes
    sizes = [n * (r + 1) // world - n * r // world for r in range(world)]
    out = {}
    for layer in sorted(local):
        rows = local[layer].to(accelerator.device)
        padded = accelerator.pad_across_processes(rows, dim=0)
        gathered = accelerator.gather(padded).cpu()
        longest = padded.shape[0]
        out[layer] = torch.cat([gathered[r * longest : r * longest + sizes[r]] for r in range(world)])
    return out


"""What FID, KID and precision/recall compare with: `evaluate.py RUN --reference REF`.

- `train` (the default): the run's own training data (data.limit included), as before.
- a folder of images: prepared once, like data.name=image_folder, at the run's resolution and
  channels (gan.prepare's rules, cached), so its images are shaped as the run's own.
- a prepared set (a folder holding manifest.json, made by gan.prepare): used at its own size.
- an `.npz` holding `mu` and `sigma` (pytorch-fid's and clean-fid's format): FID's statistics
  only, so FID alone; the metrics that need the reference's features (KID, precision and recall,
  fd_mnist) are reported unavailable. Comparable only with statistics of the same Inception
  weights and resizing: clean-fid's resize differs from torch-fidelity's (docs/evaluation.md).
- a torch-fidelity registered input (cifar10-train, cifar10-val, ...): from torch-fidelity's own
  registry, downloaded once into its own cache (TORCH_HOME/fidelity_datasets).

The reference is part of the metric settings (a checkpoint is scored again against another one)
and of the real-statistics cache key (its name and its images' digest).
"""

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gan.config import Config
from gan.errors import GanError, quote

TRAIN = "train"


def registered() -> list[str]:
    from torch_fidelity.registry import DATASETS_REGISTRY

    return list(DATASETS_REGISTRY)


@dataclass(frozen=True)
class Reference:
    text: str  # as given: the settings' value
    kind: str  # train, folder, prepared, npz or registered
    path: Path | None = None

    @property
    def has_features(self) -> bool:
        return self.kind != "npz"


def parse_reference(text: str) -> Reference:
    """--reference REF, checked: it exists and is of a kind this module reads."""
    if text == TRAIN:
        return Reference(text, TRAIN)
    path = Path(text)
    if path.suffix == ".npz":
        if not path.is_file():
            raise GanError(f"--reference {quote(text)}: no such .npz file")
        return Reference(text, "npz", path.resolve())
    if path.is_dir():
        kind = "prepared" if (path / "manifest.json").is_file() else "folder"
        return Reference(text, kind, path.resolve())
    if text in registered():
        return Reference(text, "registered")
    raise GanError(f"--reference {quote(text)} is neither a folder, a prepared set, an .npz file nor a registered "
                   f"input; give train (the run's data), a folder of images, a prepared set (gan.prepare), an "
                   f".npz with mu and sigma, or one of torch-fidelity's: {', '.join(registered())}")  # fmt: skip


def reference_config(ref: Reference, cfg: Config) -> Config:
    """The config whose data are the reference's images (folder, prepared): what build_data reads and
    the real-statistics cache key names."""
    if ref.kind == "folder":
        data = dataclasses.replace(cfg.data, name="image_folder", root=str(ref.path), limit=None, pseudo_labels=None)
    elif ref.kind == "prepared":
        from gan.prepared import open_prepared

        manifest = open_prepared(ref.path).manifest
        data = dataclasses.replace(cfg.data, name="prepared", root=str(ref.path), limit=None, pseudo_labels=None,
                                   resolution=manifest["resolution"], channels=manifest["channels"])  # fmt: skip
    else:
        return cfg
    return dataclasses.replace(cfg, data=data)


def registered_images(ref: Reference) -> torch.Tensor:
    """A torch-fidelity registered input's images, uint8 (N, C, H, W), through its own registry and cache."""
    import os

    from torch_fidelity.registry import DATASETS_REGISTRY

    root = os.path.join(torch.hub._get_torch_home(), "fidelity_datasets")  # torch-fidelity's own default
    try:
        os.makedirs(root, exist_ok=True)
        dataset = DATASETS_REGISTRY[ref.text](root, True)
    except Exception as err:  # offline: the download's URLError, or a torn archive
        raise GanError(f"--reference {ref.text}: torch-fidelity could not get it into {quote(root)} "
                       f"({str(err).splitlines()[0][:160] if str(err) else type(err).__name__}); without a network, "
                       "give a folder of images, a prepared set or an .npz with mu and sigma") from None  # fmt: skip
    return torch.stack([dataset[i] for i in range(len(dataset))])


def load_npz(ref: Reference, layer: str) -> dict:
    """{mu, sigma} from an .npz (pytorch-fid's and clean-fid's keys), checked against the feature size."""
    try:
        with np.load(ref.path, allow_pickle=False) as saved:
            missing = [key for key in ("mu", "sigma") if key not in saved.files]
            if missing:
                raise GanError(f"--reference {quote(ref.text)} has no {' and no '.join(missing)} array: an .npz of "
                               f"FID statistics holds mu and sigma (it holds: {', '.join(saved.files) or 'nothing'})")  # fmt: skip
            # the dtypes of torch-fidelity's fid_features_to_statistics, which its FID asserts equal
            mu, sigma = saved["mu"].astype(np.float32), saved["sigma"].astype(np.float64)
    except (OSError, ValueError, EOFError) as err:
        raise GanError(f"--reference {quote(ref.text)} is not a readable .npz ({err})") from None
    d = int(layer) if layer.isdigit() else mu.shape[0]
    if mu.shape != (d,) or sigma.shape != (d, d):
        raise GanError(f"--reference {quote(ref.text)} holds mu {tuple(mu.shape)} and sigma {tuple(sigma.shape)}; "
                       f"FID's features here have {d} dimensions: mu ({d},), sigma ({d}, {d})")  # fmt: skip
    return {"mu": mu, "sigma": sigma}

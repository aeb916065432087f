"""Image files as uint8 tensors: which files are images, and decoding that a hostile file cannot crash."""

import logging
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
# The PIL decoders for those suffixes. PIL picks the decoder by content, so without this list a
# renamed file reaches any plugin (EPS runs Ghostscript).
PIL_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP", "TIFF", "PPM")


def read_image(path: Path, channels: int) -> tuple[torch.Tensor | None, str]:
    """One image file as uint8 (C, H, W), or (None, why it cannot be read).

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
    except Exception as err:
        return None, f"{err.__class__.__name__}: {str(err)[:120]}" if str(err) else err.__class__.__name__
    if array.dtype.kind == "f":
        array = (np.nan_to_num(array, nan=0.0).clip(0, 1) * 255).round()
    elif array.dtype != np.uint8:
        array = array.clip(0, 65535) >> 8
    tensor = torch.from_numpy(array.astype(np.uint8))
    return (tensor.unsqueeze(0) if tensor.ndim == 2 else tensor.permute(2, 0, 1)), ""


def decode_image(path: Path, channels: int) -> torch.Tensor | None:
    """read_image without the reason."""
    return read_image(path, channels)[0]


@contextmanager
def quiet_pil():
    """PIL logs an error line per malformed TIFF; such files are counted as skipped instead."""
    log = logging.getLogger("PIL")
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        log.setLevel(level)


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES


def list_images(folder: Path) -> list[Path]:
    """Image files under folder, recursively, sorted; hidden files and folders (".name") are not data."""
    return sorted(
        p for p in folder.rglob("*")
        if is_image_file(p) and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )  # fmt: skip

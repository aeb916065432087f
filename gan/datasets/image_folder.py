"""data.name=image_folder: every image under data.root, recursively.

Each first-level sub-folder is a class, by sorted name; images directly in data.root get label 0.
Files PIL cannot decode are skipped and counted in the prepared set's manifest; a class folder
without one readable image is an error (gan.prepared checks it), as it would shift the later labels.
"""

import hashlib
import os
from pathlib import Path

from gan.datasets._images import IMAGE_SUFFIXES, is_image_file, list_images, quiet_pil, read_image
from gan.datasets._source import Decoded, Source
from gan.errors import GanError, quote
from gan.registry import DATASETS


class ImageFolder(Source):
    name = "image_folder"

    def __init__(self, root: Path):
        self.root = root
        if not root.is_dir():
            raise GanError(f"data.root={quote(str(root))} is not a folder (data.name=image_folder)")
        try:
            entries = sorted(p for p in root.iterdir() if not p.name.startswith("."))
            class_dirs = [p for p in entries if p.is_dir()]
            files = [(str(p.relative_to(root)), 0) for p in entries if is_image_file(p)]
            for label, folder in enumerate(class_dirs):
                files += [(str(p.relative_to(root)), label) for p in list_images(folder)]
        except PermissionError as err:
            raise GanError(f"data.root={quote(str(root))} cannot be read: {err.strerror}") from None
        if not files:
            raise GanError(f"data.root={quote(str(root))} holds no readable images: no image files "
                           f"({', '.join(sorted(IMAGE_SUFFIXES))})")  # fmt: skip
        self.class_names = tuple(p.name for p in class_dirs)
        self.files = files

    def identity(self) -> dict:
        """The folder and a digest of its listing (names, sizes, modification times): an edited folder is new."""
        listing = hashlib.blake2b(digest_size=16)
        for relative, label in self.files:
            stat = os.stat(self.root / relative)
            listing.update(f"{relative}\0{label}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        return {"name": self.name, "root": str(self.root.resolve()), "files": len(self.files),
                "listing": listing.hexdigest()}  # fmt: skip

    def items(self) -> list:
        return self.files

    def decode(self, items: list, channels: int) -> Decoded:
        out = Decoded([], [])
        with quiet_pil():
            for relative, label in items:
                image, reason = read_image(self.root / relative, channels)
                if image is None:
                    out.skipped.append((relative, reason))
                else:
                    out.images.append(image)
                    out.labels.append(label)
        return out


@DATASETS.register("image_folder")
def image_folder(data_cfg) -> ImageFolder:
    return ImageFolder(Path(data_cfg.root))

"""data.name=prepared: a set written by `python -m gan.prepare`, at data.root, read in place."""

from pathlib import Path

from gan.datasets._source import Source
from gan.errors import GanError, quote
from gan.registry import DATASETS


class Prepared(Source):
    name = "prepared"
    prepared = True

    def __init__(self, root: Path):
        from gan.prepared import read_manifest

        if not root.is_dir():
            raise GanError(f"data.root={quote(str(root))} is not a folder (data.name=prepared)")
        self.path = root
        self.class_names = tuple(read_manifest(root)["class_names"])

    def identity(self) -> dict:
        from gan.prepared import read_manifest

        manifest = read_manifest(self.path)
        return {"name": self.name, "root": str(self.path.resolve()), "digest": manifest["digest"]}


@DATASETS.register("prepared")
def prepared(data_cfg) -> Prepared:
    return Prepared(Path(data_cfg.root))

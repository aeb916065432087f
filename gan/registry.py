"""One registry per pluggable kind: networks, losses, data sets, augmentations."""

from gan.errors import GanError, quote


class Registry:
    """A name -> builder map whose lookups fail with the list of legal names."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict = {}

    def register(self, name: str):
        def decorator(builder):
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = builder
            return builder

        return decorator

    def get(self, name: str, key: str | None = None):
        if name not in self._entries:
            where = f"{key}: " if key else ""
            raise GanError(f"{where}unknown {self.kind} {quote(name)}; choose one of: {', '.join(self.names())}")
        return self._entries[name]

    def names(self) -> list[str]:
        return sorted(self._entries)


NETWORKS = Registry("network")
LOSSES = Registry("loss")
DATASETS = Registry("data set")
AUGMENTATIONS = Registry("augmentation")

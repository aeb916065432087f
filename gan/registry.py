"""One registry per pluggable kind: networks, losses, data sets, augmentations, metrics.

The plugins of a kind are the modules of one package, one module per name: `gan/losses/hinge.py` is
the loss `hinge`. `names()` reads the package's folder without importing anything from it, so the
config can check a name without importing torch; `get(name)` imports that one module, whose
`@REGISTRY.register(name)` decorator then hands over what it defines. Modules whose name starts
with `_` are the kind's shared helpers, not plugins.
"""

import importlib
import importlib.util
import pkgutil

from gan.errors import GanError, quote


class Registry:
    """A kind's plugins, listed from the files of its package and imported one at a time on lookup."""

    def __init__(self, kind: str, package: str):
        self.kind = kind
        self.package = package
        self._entries: dict = {}

    def register(self, name: str):
        """Decorator: the plugin module `package.name` registers its builder under its own name."""

        def decorator(builder):
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = builder
            return builder

        return decorator

    def names(self) -> list[str]:
        """The plugin names: the package's modules, from its folder. find_spec of a dotted name imports
        the parents (`gan`) but not the package itself, and iter_modules only lists files."""
        spec = importlib.util.find_spec(self.package)
        if spec is None or spec.submodule_search_locations is None:
            raise ModuleNotFoundError(f"the {self.kind} package {self.package} is missing")
        found = pkgutil.iter_modules(spec.submodule_search_locations)
        return sorted(module.name for module in found if not module.name.startswith("_"))

    def check(self, name: str, key: str | None = None) -> None:
        """Raise the one-line GanError, naming key and the legal names, unless name is a plugin."""
        legal = self.names()
        if name not in legal:
            where = f"{key}: " if key else ""
            raise GanError(f"{where}unknown {self.kind} {quote(name)}; choose one of: {', '.join(legal)}")

    def get(self, name: str, key: str | None = None):
        """What the module `package.name` registered; it is imported now if it was not yet."""
        self.check(name, key)
        importlib.import_module(f"{self.package}.{name}")  # runs its @register decorator once
        if name not in self._entries:
            raise RuntimeError(f"{self.package}.{name} does not register the {self.kind} {name!r}")
        return self._entries[name]


NETWORKS = Registry("network", "gan.networks")
LOSSES = Registry("loss", "gan.losses")
DATASETS = Registry("data set", "gan.datasets")
AUGMENTATIONS = Registry("augmentation", "gan.augment")
METRICS = Registry("metric", "gan.evaluation.metrics")

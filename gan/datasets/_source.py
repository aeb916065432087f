"""What a data set module returns: a Source, read item by item when a prepared set is written.

Items are small picklable descriptions (an index, a path and label) so that worker processes can
each decode a slice of them. `identity()` is what names the source in a prepared set's manifest
and in the cache key of the named sets: two sources with the same identity hold the same images.
"""

from dataclasses import dataclass, field

import torch


@dataclass
class Decoded:
    """One chunk of items decoded: images at their own size, with the items that could not be read."""

    images: list  # uint8 (C, H, W) tensors, or one (N, C, H, W) tensor when all share a size
    labels: list[int]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (item, reason)


class Source:
    name: str = ""
    class_names: tuple[str, ...] = ()
    # True: the source is already a prepared set (data.name=prepared), read in place
    prepared: bool = False

    def identity(self) -> dict:
        raise NotImplementedError

    def items(self) -> list:
        raise NotImplementedError

    def decode(self, items: list, channels: int) -> Decoded:
        raise NotImplementedError

    @property
    def num_classes(self) -> int:
        return max(1, len(self.class_names))


class ArraySource(Source):
    """A source held as one uint8 (N, C, H, W) array, loaded once per process on first decode."""

    def load(self) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def _arrays(self):
        if getattr(self, "_loaded", None) is None:
            self._loaded = self.load()
        return self._loaded

    def __getstate__(self):  # workers load the arrays themselves rather than receive them pickled
        return {k: v for k, v in self.__dict__.items() if k != "_loaded"}

    def items(self) -> list:
        return list(range(len(self._arrays()[0])))

    def decode(self, items: list, channels: int) -> Decoded:
        images, labels = self._arrays()
        index = torch.as_tensor(items, dtype=torch.long)
        return Decoded(images[index], labels[index].tolist())

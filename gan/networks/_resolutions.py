"""Which image sizes a network family can produce, answered without building a network or reading data.

A family that produces only some sizes lists them as the keys of its module's LAYOUTS (dcgan.py,
resnet.py), and its builder refuses any other size with the one-line error below. A family without
LAYOUTS leaves the sizes to its builder alone (mlp.py produces any size). `check_resolution` raises
the builders' error from LAYOUTS alone, so that a run can refuse a size before it reads any data
or builds a large network.
"""

import sys

from gan.errors import GanError
from gan.registry import NETWORKS


def supported_resolutions(network: str) -> tuple[int, ...] | None:
    """The sizes (px) model.network can produce, smallest first; None: the family lists none (see above).

    Imports the family's module (through its registry entry) and builds nothing.
    """
    builder = NETWORKS.get(network, "model.network")  # an unknown name is the registry's one-line error
    layouts = getattr(sys.modules[builder.__module__], "LAYOUTS", None)
    return None if layouts is None else tuple(sorted(layouts))


def check_resolution(cfg) -> None:
    """One GanError line naming model.network, data.resolution and the legal sizes, unless they fit.

    The same line as the family's builder raises; a family without LAYOUTS passes here.
    """
    network, resolution = cfg.model.network, cfg.data.resolution
    legal = supported_resolutions(network)
    if legal is not None and resolution not in legal:
        raise GanError(f"data.resolution={resolution} cannot be produced by model.network={network}; "
                       f"choose one of: {', '.join(map(str, legal))}")  # fmt: skip

"""Generator/discriminator pairs, one module per family, registered in NETWORKS."""

from gan.errors import GanError
from gan.networks import dcgan, mlp  # noqa: F401  (register the families)
from gan.registry import NETWORKS


def build_networks(cfg, num_classes: int = 0):
    """(G, D) for cfg.model.network at cfg.data's resolution and channels.

    G(z, labels) -> images in [-1, 1]; D(images, labels) -> one logit per image.
    Unconditional networks ignore the labels.
    """
    G, D = NETWORKS.get(cfg.model.network, "model.network")(cfg, num_classes)
    if not hasattr(G, "z_dim"):
        raise GanError(f"model.network={cfg.model.network}: G must expose z_dim")
    return G, D

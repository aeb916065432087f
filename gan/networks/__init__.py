"""Generator/discriminator pairs: each module here (mlp.py, dcgan.py, resnet.py, r3gan.py) is one family, registered
in NETWORKS under its module's name; `_layers.py` holds the layers they share. build_networks builds a
family and checks the contract every family keeps.

Nothing here imports the families: NETWORKS lists them from this folder and imports the one asked for.
"""

from torch import nn

from gan.errors import GanError
from gan.networks._layers import add_spectral_norm
from gan.registry import NETWORKS

CONDITIONAL_FAMILIES = ("dcgan", "resnet", "r3gan")


def build_networks(cfg, num_classes: int = 0):
    """(G, D) for cfg.model.network at cfg.data's resolution and channels.

    G(z, labels) -> images in [-1, 1]; D(images, labels) -> one logit per image.
    Unconditional networks ignore the labels. A class-conditional G has num_classes > 0.
    """
    if cfg.model.conditional:
        check_conditional(cfg, num_classes)
    G, D = NETWORKS.get(cfg.model.network, "model.network")(cfg, num_classes)
    if not hasattr(G, "z_dim"):
        raise GanError(f"model.network={cfg.model.network}: G must expose z_dim")
    penalised = cfg.loss.gp_weight > 0 or cfg.loss.r1_weight > 0 or cfg.loss.r2_weight > 0
    if penalised and any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in D.modules()):
        raise GanError("loss.gp_weight/loss.r1_weight/loss.r2_weight penalise each image's gradient, which BatchNorm in D "
                       "mixes across the batch: set model.d_norm=layer or model.d_norm=none")  # fmt: skip
    if cfg.model.spectral_norm:
        add_spectral_norm(D)
    return G, D


def check_conditional(cfg, num_classes: int) -> None:
    if cfg.model.network not in CONDITIONAL_FAMILIES:
        raise GanError(f"model.conditional=true: model.network={cfg.model.network} has no conditional variant; "
                       f"choose one of: {', '.join(CONDITIONAL_FAMILIES)}")  # fmt: skip
    if num_classes < 2:
        raise GanError(f"model.conditional=true needs labelled data, but data.name={cfg.data.name} has "
                       f"{num_classes} class (image_folder: one sub-folder per class)")  # fmt: skip

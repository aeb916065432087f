"""Layers shared by the network families: conditional BatchNorm, the projection head, D's norms, spectral norm."""

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from gan.errors import GanError


class ConditionalBatchNorm2d(nn.Module):
    """BatchNorm whose gain and bias are looked up per class (de Vries et al. 2017; Miyato & Koyama 2018).

    The running statistics are shared by all classes; the affine part starts as the identity.
    """

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, affine=False)
        self.gain = nn.Embedding(num_classes, channels)
        self.bias = nn.Embedding(num_classes, channels)
        nn.init.ones_(self.gain.weight)
        nn.init.zeros_(self.bias.weight)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.bn(x) * self.gain(labels)[:, :, None, None] + self.bias(labels)[:, :, None, None]


def g_norm(channels: int, num_classes: int) -> nn.Module:
    """G's BatchNorm: conditional for a class-conditional G (num_classes > 0)."""
    return ConditionalBatchNorm2d(channels, num_classes) if num_classes else nn.BatchNorm2d(channels)


def apply_norm(norm: nn.Module, x: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
    return norm(x, labels) if isinstance(norm, ConditionalBatchNorm2d) else norm(x)


class LabelledSequential(nn.Sequential):
    """nn.Sequential that also hands the labels to its ConditionalBatchNorm2d layers."""

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        for layer in self:
            x = apply_norm(layer, x, labels)
        return x


class Projection(nn.Module):
    """The class term of a projection discriminator (Miyato & Koyama 2018): <embed(y), h(x)>.

    Added to D's unconditional output; h are D's pooled features, shape (N, features).
    """

    def __init__(self, num_classes: int, features: int):
        super().__init__()
        self.embed = nn.Embedding(num_classes, features)
        nn.init.xavier_uniform_(self.embed.weight)

    def forward(self, h: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return (self.embed(labels) * h).sum(1)




def d_norm(kind: str, channels: int) -> nn.Module:
    """D's normalisation: batch; layer (over C, H, W per image, as WGAN-GP recommends); none."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "layer":
        return nn.GroupNorm(1, channels)
    return nn.Identity()


def check_d_norm(model_cfg, supported: tuple[str, ...], default: str) -> str:
    """model.d_norm resolved for a network family."""
    kind = model_cfg.d_norm or default
    if kind not in supported:
        raise GanError(f"model.d_norm={kind} is not available for model.network={model_cfg.network}; "
                       f"choose one of: {', '.join(supported)}")  # fmt: skip
    return kind


SPECTRAL_NORM_LAYERS = (nn.Conv2d, nn.Linear, nn.Embedding)


def add_spectral_norm(module: nn.Module) -> nn.Module:
    """Spectral norm on every conv, linear and embedding weight: torch's parametrization, one power iteration per
    training forward. Conv weights are normalised as (out, in * k * k) matrices, as in the paper."""
    for layer in [m for m in module.modules() if isinstance(m, SPECTRAL_NORM_LAYERS)]:
        spectral_norm(layer)
    return module

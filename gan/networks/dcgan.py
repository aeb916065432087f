"""DCGAN (Radford et al. 2016): transposed convolutions, BatchNorm, LeakyReLU 0.2, N(0, 0.02) init.

Works at 28 px (7x7 start, 2 upsamplings), 32 px (4x4, 3) and 64 px (4x4, 4). Options: a
class-conditional G (conditional BatchNorm) and D (projection), and D's normalisation (model.d_norm).
"""

import torch
import torch.nn.functional as F
from torch import nn

from gan.errors import GanError
from gan.networks.layers import LabelledSequential, Projection, check_d_norm, d_norm, g_norm
from gan.registry import NETWORKS

# resolution -> (side of the first feature map, number of 2x upsamplings)
LAYOUTS = {28: (7, 2), 32: (4, 3), 64: (4, 4)}


class DCGANGenerator(nn.Module):
    """num_classes > 0: class-conditional. The one-hot label joins z at the input (Mirza & Osindero 2014)
    and each BatchNorm's gain and bias are chosen by the label. Conditional BatchNorm alone learns
    the classes slowly: Adam moves its per-class gains by about lr per step, while the one-hot input
    reaches the first layer's weights at once (docs/results.md compares the two)."""

    def __init__(self, z_dim: int, base: int, channels: int, resolution: int, num_classes: int = 0):
        super().__init__()
        start, ups = LAYOUTS[resolution]
        self.z_dim, self.num_classes = z_dim, num_classes
        width = base * 2 ** (ups - 1)
        layers = [nn.ConvTranspose2d(z_dim + num_classes, width, start, 1, 0, bias=False)]
        layers += [g_norm(width, num_classes), nn.ReLU(True)]
        for _ in range(ups - 1):
            layers += [nn.ConvTranspose2d(width, width // 2, 4, 2, 1, bias=False)]
            layers += [g_norm(width // 2, num_classes), nn.ReLU(True)]
            width //= 2
        layers += [nn.ConvTranspose2d(width, channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = LabelledSequential(*layers)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.num_classes:
            z = torch.cat([z, F.one_hot(labels, self.num_classes).to(z.dtype)], 1)
        return self.main(z.view(len(z), -1, 1, 1), labels)


class DCGANDiscriminator(nn.Module):
    """norm: batch (DCGAN), layer or none. num_classes > 0: a projection discriminator."""

    def __init__(self, base: int, channels: int, resolution: int, norm: str = "batch", num_classes: int = 0):
        super().__init__()
        start, downs = LAYOUTS[resolution]
        # Without a norm layer the convs need biases: a bias-free LeakyReLU net is positively
        # homogeneous, D(0) = 0, and a G that outputs flat grey images would sit where D cannot push.
        bias = norm == "none"
        layers = [nn.Conv2d(channels, base, 4, 2, 1, bias=bias), nn.LeakyReLU(0.2, inplace=True)]
        width = base
        for _ in range(downs - 1):
            layers += [nn.Conv2d(width, width * 2, 4, 2, 1, bias=bias)]
            layers += [d_norm(norm, width * 2)] if norm != "none" else []
            layers += [nn.LeakyReLU(0.2, inplace=True)]
            width *= 2
        layers += [nn.Conv2d(width, 1, start, 1, 0, bias=bias)]
        self.main = nn.Sequential(*layers)
        # the class term is a class-specific version of the last conv: <embed(y), flattened features>
        self.projection = Projection(num_classes, width * start * start) if num_classes else None

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.projection is None:
            return self.main(images).view(-1)
        h = self.main[:-1](images)  # the last feature map, which the last conv reduces to one number
        return self.main[-1](h).view(-1) + self.projection(h.flatten(1), labels)


def dcgan_init(module: nn.Module) -> None:
    if isinstance(module, nn.Conv2d | nn.ConvTranspose2d):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d | nn.GroupNorm) and module.weight is not None:
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


@NETWORKS.register("dcgan")
def build_dcgan(cfg, num_classes: int = 0):
    m, d = cfg.model, cfg.data
    if d.resolution not in LAYOUTS:
        legal = ", ".join(map(str, LAYOUTS))
        raise GanError(f"data.resolution={d.resolution} cannot be produced by model.network=dcgan; "
                       f"choose one of: {legal}")  # fmt: skip
    norm = check_d_norm(m, ("batch", "layer", "none"), default="batch")
    classes = num_classes if m.conditional else 0
    G = DCGANGenerator(m.z_dim, m.g_channels, d.channels, d.resolution, classes)
    D = DCGANDiscriminator(m.d_channels, d.channels, d.resolution, norm, classes)
    G.apply(dcgan_init)
    D.apply(dcgan_init)
    return G, D

"""DCGAN (Radford et al. 2016): transposed convolutions, BatchNorm, LeakyReLU 0.2, N(0, 0.02) init.

Works at 28 px (7x7 start, 2 upsamplings), 32 px (4x4, 3) and 64 px (4x4, 4).
"""

import torch
from torch import nn

from gan.errors import GanError
from gan.registry import NETWORKS

# resolution -> (side of the first feature map, number of 2x upsamplings)
LAYOUTS = {28: (7, 2), 32: (4, 3), 64: (4, 4)}


class DCGANGenerator(nn.Module):
    def __init__(self, z_dim: int, base: int, channels: int, resolution: int):
        super().__init__()
        start, ups = LAYOUTS[resolution]
        self.z_dim = z_dim
        width = base * 2 ** (ups - 1)
        layers = [nn.ConvTranspose2d(z_dim, width, start, 1, 0, bias=False), nn.BatchNorm2d(width), nn.ReLU(True)]
        for _ in range(ups - 1):
            layers += [nn.ConvTranspose2d(width, width // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(width // 2)]
            layers += [nn.ReLU(True)]
            width //= 2
        layers += [nn.ConvTranspose2d(width, channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.main(z.view(len(z), -1, 1, 1))


class DCGANDiscriminator(nn.Module):
    def __init__(self, base: int, channels: int, resolution: int):
        super().__init__()
        start, downs = LAYOUTS[resolution]
        layers = [nn.Conv2d(channels, base, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True)]
        width = base
        for _ in range(downs - 1):
            layers += [nn.Conv2d(width, width * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(width * 2)]
            layers += [nn.LeakyReLU(0.2, inplace=True)]
            width *= 2
        layers += [nn.Conv2d(width, 1, start, 1, 0, bias=False)]
        self.main = nn.Sequential(*layers)

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.main(images).view(-1)


def dcgan_init(module: nn.Module) -> None:
    if isinstance(module, nn.Conv2d | nn.ConvTranspose2d):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


@NETWORKS.register("dcgan")
def build_dcgan(cfg, num_classes: int = 0):
    m, d = cfg.model, cfg.data
    if d.resolution not in LAYOUTS:
        legal = ", ".join(map(str, LAYOUTS))
        raise GanError(f"data.resolution={d.resolution} cannot be produced by model.network=dcgan; choose one of: {legal}")
    G = DCGANGenerator(m.z_dim, m.g_channels, d.channels, d.resolution)
    D = DCGANDiscriminator(m.d_channels, d.channels, d.resolution)
    G.apply(dcgan_init)
    D.apply(dcgan_init)
    return G, D

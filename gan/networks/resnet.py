"""The SNGAN ResNet for CIFAR-10 (Miyato et al. 2018, appendix B.4; after Gulrajani et al. 2017).

G: z -> linear -> (start x start) -> upsampling residual blocks -> BN, ReLU, conv3x3, tanh.
D: an optimised first block and residual blocks (average-pool downsampling until the side is 8 or
less), then two blocks without downsampling, ReLU, global sum pooling, linear. At 32 px with
g_channels=256, d_channels=128 this is the paper's network; 28 px (7x7 start) serves MNIST.
Class-conditional: conditional BatchNorm in G's blocks and a projection D (Miyato & Koyama 2018).
D has no normalisation; SNGAN adds spectral norm (model.spectral_norm=true).
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from gan.errors import GanError
from gan.networks.layers import Projection, apply_norm, check_d_norm, g_norm
from gan.registry import NETWORKS

# resolution -> (side of G's first feature map, number of 2x upsamplings)
LAYOUTS = {28: (7, 2), 32: (4, 3), 48: (6, 3), 64: (4, 4)}


def conv3x3(cin: int, cout: int, gain: float = 1.0) -> nn.Conv2d:
    conv = nn.Conv2d(cin, cout, 3, 1, 1)
    nn.init.xavier_uniform_(conv.weight, gain)
    nn.init.zeros_(conv.bias)
    return conv


def conv1x1(cin: int, cout: int) -> nn.Conv2d:
    conv = nn.Conv2d(cin, cout, 1, 1, 0)
    nn.init.xavier_uniform_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


class GBlock(nn.Module):
    """BN, ReLU, 2x nearest upsampling, conv3x3, BN, ReLU, conv3x3; shortcut: upsampling, conv1x1."""

    def __init__(self, cin: int, cout: int, num_classes: int):
        super().__init__()
        self.norm1, self.norm2 = g_norm(cin, num_classes), g_norm(cout, num_classes)
        self.conv1, self.conv2 = conv3x3(cin, cout, math.sqrt(2)), conv3x3(cout, cout, math.sqrt(2))
        self.shortcut = conv1x1(cin, cout)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        h = F.relu(apply_norm(self.norm1, x, labels))
        h = self.conv1(F.interpolate(h, scale_factor=2, mode="nearest"))
        h = self.conv2(F.relu(apply_norm(self.norm2, h, labels)))
        return h + self.shortcut(F.interpolate(x, scale_factor=2, mode="nearest"))


class DBlock(nn.Module):
    """ReLU, conv3x3, ReLU, conv3x3, [avg-pool]; shortcut: conv1x1, [avg-pool] (identity if it can be).

    first=True is the paper's optimised first block: no ReLU on the image, pooling before the shortcut conv.
    """

    def __init__(self, cin: int, cout: int, downsample: bool, first: bool = False):
        super().__init__()
        self.downsample, self.first = downsample, first
        self.conv1, self.conv2 = conv3x3(cin, cout, math.sqrt(2)), conv3x3(cout, cout, math.sqrt(2))
        self.shortcut = conv1x1(cin, cout) if (cin != cout or downsample) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(x if self.first else F.relu(x))
        h = self.conv2(F.relu(h))
        if self.downsample:
            h = F.avg_pool2d(h, 2)
        return h + self._shortcut(x)

    def _shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.shortcut is None:
            return x
        if self.first:
            return self.shortcut(F.avg_pool2d(x, 2))
        x = self.shortcut(x)
        return F.avg_pool2d(x, 2) if self.downsample else x


class ResNetGenerator(nn.Module):
    def __init__(self, z_dim: int, width: int, channels: int, resolution: int, num_classes: int = 0):
        super().__init__()
        self.z_dim, self.num_classes, self.width = z_dim, num_classes, width
        self.start, ups = LAYOUTS[resolution]
        self.linear = nn.Linear(z_dim, self.start * self.start * width)
        nn.init.xavier_uniform_(self.linear.weight)
        self.blocks = nn.ModuleList(GBlock(width, width, num_classes) for _ in range(ups))
        self.norm = nn.BatchNorm2d(width)
        self.to_image = conv3x3(width, channels)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        h = self.linear(z).view(len(z), self.width, self.start, self.start)
        for block in self.blocks:
            h = block(h, labels)
        return torch.tanh(self.to_image(F.relu(self.norm(h))))


class ResNetDiscriminator(nn.Module):
    def __init__(self, width: int, channels: int, resolution: int, num_classes: int = 0):
        super().__init__()
        blocks, side = [DBlock(channels, width, downsample=True, first=True)], resolution // 2
        while side > 8 and side % 2 == 0:
            blocks.append(DBlock(width, width, downsample=True))
            side //= 2
        blocks += [DBlock(width, width, downsample=False), DBlock(width, width, downsample=False)]
        self.blocks = nn.Sequential(*blocks)
        self.linear = nn.Linear(width, 1)
        nn.init.xavier_uniform_(self.linear.weight)
        self.projection = Projection(num_classes, width) if num_classes else None

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        h = F.relu(self.blocks(images)).sum((2, 3))  # global sum pooling
        out = self.linear(h).view(-1)
        return out if self.projection is None else out + self.projection(h, labels)


@NETWORKS.register("resnet")
def build_resnet(cfg, num_classes: int = 0):
    m, d = cfg.model, cfg.data
    if d.resolution not in LAYOUTS:
        legal = ", ".join(map(str, LAYOUTS))
        raise GanError(f"data.resolution={d.resolution} cannot be produced by model.network=resnet; "
                       f"choose one of: {legal}")  # fmt: skip
    check_d_norm(cfg.model, ("none",), default="none")
    classes = num_classes if m.conditional else 0
    G = ResNetGenerator(m.z_dim, m.g_channels, d.channels, d.resolution, classes)
    D = ResNetDiscriminator(m.d_channels, d.channels, d.resolution, classes)
    return G, D

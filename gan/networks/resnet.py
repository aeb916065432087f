"""The SNGAN ResNets (Miyato et al. 2018, appendix B.4; after Gulrajani et al. 2017), 28 to 256 px.

G: z -> linear -> (start x start) -> one upsampling residual block per doubling -> BN, ReLU, conv3x3,
tanh. D: an optimised first block and residual blocks, the first ones halving the side by average
pooling, ReLU, global sum pooling, linear. Class-conditional: conditional BatchNorm in G's blocks
and a projection D (Miyato & Koyama 2018). D has no normalisation; SNGAN adds spectral norm
(model.spectral_norm=true).

Up to 64 px every block has the base width (model.g_channels in G, model.d_channels in D), as in
SNGAN's CIFAR-10 network, and D halves the side down to 8 (or to an odd side), then adds two blocks;
at 32 px with g_channels=256, d_channels=128 this is the paper's network, 28 px (7x7 start) serves
MNIST. At 128 and 256 px the widths are multiples of the base per stage, BigGAN's (Brock et al. 2019)
layouts, which the projection discriminator's 128 px ImageNet network (Miyato & Koyama 2018) also
has: G narrows from 16x base at 4x4 to 1x base at the last block, D widens in mirror from 1x base,
halves the side down to 4x4 and adds one block. As multiples of the base width:

    128 px  G 16 16 8 4 2 1 (4x4 to 128x128)      D 1 2 4 8 16 16 (64x64 to 4x4, then 4x4)
    256 px  G 16 16 8 8 4 2 1 (4x4 to 256x256)    D 1 2 4 8 8 16 16 (128x128 to 4x4, then 4x4)

The multiple stops at 16x, and 256 px repeats 8x instead of doubling once more: at base 64 (the
default, 1024 channels at 4x4) G has 31.7 M parameters at 128 px and 36.7 M at 256 px, where a
multiple doubling at every stage would reach 32x and 124 M. The CIFAR presets' base widths (128,
256) would give 2048 or 4096 channels at 4x4.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from gan.networks._layers import Projection, apply_norm, check_d_norm, g_norm
from gan.networks._resolutions import check_resolution
from gan.registry import NETWORKS

# resolution -> (side of G's first feature map, G's widths, D's widths, how many of D's blocks halve the side).
# G's widths: its first feature map's, then each upsampling block's output; D's: each block's output, the
# first ones halving the side; both as multiples of the base width (model.g_channels, model.d_channels).
LAYOUTS = {
    28: (7, (1, 1, 1), (1, 1, 1, 1), 2),
    32: (4, (1, 1, 1, 1), (1, 1, 1, 1), 2),
    48: (6, (1, 1, 1, 1), (1, 1, 1, 1, 1), 3),
    64: (4, (1, 1, 1, 1, 1), (1, 1, 1, 1, 1), 3),
    128: (4, (16, 16, 8, 4, 2, 1), (1, 2, 4, 8, 16, 16), 5),
    256: (4, (16, 16, 8, 8, 4, 2, 1), (1, 2, 4, 8, 8, 16, 16), 6),
}


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
    def __init__(self, z_dim: int, base: int, channels: int, resolution: int, num_classes: int = 0):
        super().__init__()
        self.start, multiples, _, _ = LAYOUTS[resolution]
        widths = [base * k for k in multiples]
        self.z_dim, self.num_classes, self.width = z_dim, num_classes, widths[0]
        self.linear = nn.Linear(z_dim, self.start * self.start * widths[0])
        nn.init.xavier_uniform_(self.linear.weight)
        pairs = zip(widths[:-1], widths[1:], strict=True)
        self.blocks = nn.ModuleList(GBlock(cin, cout, num_classes) for cin, cout in pairs)
        self.norm = nn.BatchNorm2d(widths[-1])
        self.to_image = conv3x3(widths[-1], channels)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        h = self.linear(z).view(-1, self.width, self.start, self.start)
        for block in self.blocks:
            h = block(h, labels)
        return torch.tanh(self.to_image(F.relu(self.norm(h))))


class ResNetDiscriminator(nn.Module):
    def __init__(self, base: int, channels: int, resolution: int, num_classes: int = 0):
        super().__init__()
        _, _, multiples, downs = LAYOUTS[resolution]
        widths = [base * k for k in multiples]
        blocks = [DBlock(channels, widths[0], downsample=True, first=True)]
        for i in range(1, len(widths)):  # a block that keeps its width and side has the identity shortcut
            blocks.append(DBlock(widths[i - 1], widths[i], downsample=i < downs))
        self.blocks = nn.Sequential(*blocks)
        self.linear = nn.Linear(widths[-1], 1)
        nn.init.xavier_uniform_(self.linear.weight)
        self.projection = Projection(num_classes, widths[-1]) if num_classes else None

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        h = F.relu(self.blocks(images)).sum((2, 3))  # global sum pooling
        out = self.linear(h).view(-1)
        return out if self.projection is None else out + self.projection(h, labels)


@NETWORKS.register("resnet")
def build_resnet(cfg, num_classes: int = 0):
    m, d = cfg.model, cfg.data
    check_resolution(cfg)  # the one-line error naming the legal sizes (LAYOUTS)
    check_d_norm(cfg.model, ("none",), default="none")
    classes = num_classes if m.conditional else 0
    G = ResNetGenerator(m.z_dim, m.g_channels, d.channels, d.resolution, classes)
    D = ResNetDiscriminator(m.d_channels, d.channels, d.resolution, classes)
    return G, D

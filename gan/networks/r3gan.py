"""R3GAN (Huang et al., "The GAN is dead; long live the GAN! A Modern GAN Baseline", NeurIPS 2024).

Written from the official code (github.com/brownvc/R3GAN, R3GAN/Networks.py at 19a7ddf), layer for
layer; tests/test_r3gan_network.py checks that the paper's CIFAR-10 and FFHQ-256 networks have the
official parameter counts.

G: z (joined by a class embedding of model.z_dim numbers when conditional) scales the channels of a
learned 4x4 constant ("generative basis"); then one stage per doubling of the side, each a 2x
upsampling (a 1x1 conv first, at the lower resolution, where the width changes) and residual blocks;
a bias-free 1x1 conv makes the image. D mirrors it: a 1x1 conv from the image, per stage residual
blocks and a 2x downsampling (a 1x1 conv after it where the width changes), at 4x4 a depthwise 4x4
conv to 1x1 and a linear layer to the logit ("discriminative basis"). 28 px, our addition, starts
from 7x7 (a 7x7 basis in G and a depthwise 7x7 conv in D), as dcgan and resnet do.

The residual block is ResNeXt's inverted bottleneck without normalisation: x + conv1x1(act(grouped
conv3x3(act(conv1x1(x))))), width W -> expansion*W -> expansion*W -> W, the 3x3 conv in groups of
model.group_size channels (the paper: expansion 2, groups of 16, so cardinality = 2W / 16). Each act
adds a learned per-channel bias and applies LeakyReLU 0.2; the convs have no bias. Nothing in either
network normalises (no BatchNorm, no pixel norm, no spectral norm), and G's output has no tanh, as in
the official code: it is about [-1, 1] because the data is; the sample grids and the evaluator clamp
when they quantise (gan/data.py to_uint8).

Initialisation (Fix-up, Zhang et al. 2019): the last 1x1 conv of every residual branch is zero, so at
initialisation each block is the identity. The other two convs of a branch are drawn with std
gain / sqrt(fan_in), where gain = sqrt(2 / (1 + 0.2^2)) * L^(-1/4): LeakyReLU's gain (the forward pass
applies none) times Fix-up's L^(-1/(2m-2)) for m = 3 layers per branch and L = the network's total
number of blocks. Every other weight has std 1 / sqrt(fan_in), the generative basis N(0, 1).

Resampling. The paper and the official code name the filter [1, 2, 1], but the code convolves it with
[1, 1] first: its kernel is the outer product of [1, 3, 3, 1] with itself, / 64. The upsampling is
a zero-inserting transposed conv with 4x that kernel (bilinear interpolation with half-pixel
centres); the downsampling a stride-2 conv with it. Both zero-pad the borders: a constant image gets
darker edges, unlike F.interpolate's edge-clamped bilinear. We follow the code.

Class conditioning (num_classes > 0), as in the paper: G concatenates an embedding of the label
(model.z_dim numbers, like the official CIFAR-10 preset's 64 for its z of 64) to z; D's basis ends
in as many features as its 4x4 stage is wide, and the logit is their dot product with an embedding
of the label, without a separate unconditional term.

Mixed precision is left to Accelerate's autocast; the official code instead runs its high-resolution
stages in bf16 by hand.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from gan.errors import GanError, quote
from gan.networks._layers import check_d_norm
from gan.networks._resolutions import check_resolution
from gan.registry import NETWORKS

# resolution -> (side of G's first feature map and of D's last, number of stages: one per side)
LAYOUTS = {28: (7, 3), 32: (4, 4), 64: (4, 5), 128: (4, 6), 256: (4, 7)}
LRELU_SLOPE = 0.2
LRELU_GAIN = math.sqrt(2 / (1 + LRELU_SLOPE**2))  # He init's gain: restores the second moment LeakyReLU removes
LAYERS_PER_BRANCH = 3  # Fix-up's m: the branch's gain per layer is L^(-1 / (2m - 2))
TAPS = (1.0, 3.0, 3.0, 1.0)  # the official [1, 2, 1] convolved with [1, 1]


def init_weight(weight: torch.Tensor, gain: float = 1.0, fan_in: int | None = None) -> torch.Tensor:
    """N(0, (gain / sqrt(fan_in))^2), fan_in = what one output sums over (in/groups * k * k for a conv)."""
    fan_in = weight[0].numel() if fan_in is None else fan_in
    return nn.init.normal_(weight, 0.0, gain / math.sqrt(fan_in))


def conv(cin: int, cout: int, kernel: int = 1, gain: float = 1.0, groups: int = 1) -> nn.Conv2d:
    layer = nn.Conv2d(cin, cout, kernel, padding=kernel // 2, groups=groups, bias=False)
    init_weight(layer.weight, gain)
    return layer


class BiasedLeakyReLU(nn.Module):
    """A learned per-channel bias, then LeakyReLU 0.2 (with gain 1: the gain lives in the init)."""

    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(x + self.bias.to(x.dtype).view(1, -1, 1, 1), LRELU_SLOPE)  # keeps autocast's dtype


class ResidualBlock(nn.Module):
    """x + branch(x), the branch 1x1 (W -> E), act, grouped 3x3 (E -> E), act, 1x1 (E -> W); E = expansion W.

    total_blocks is the network's L in the Fix-up gain; the last conv starts at zero.
    """

    def __init__(self, width: int, expansion: int, group_size: int, total_blocks: int):
        super().__init__()
        expanded = width * expansion
        gain = LRELU_GAIN * total_blocks ** (-1 / (2 * LAYERS_PER_BRANCH - 2))
        self.branch = nn.Sequential(
            conv(width, expanded, 1, gain),
            BiasedLeakyReLU(expanded),
            conv(expanded, expanded, 3, gain, groups=expanded // group_size),
            BiasedLeakyReLU(expanded),
            conv(expanded, width, 1, gain=0.0),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.branch(x)


class Resample(nn.Module):
    """2x up- or downsampling of each channel with the [1, 3, 3, 1] low-pass kernel, zero-padded borders.

    up: zero insertion, then the kernel times 4 (the 4 inserted pixels per input pixel share its mass):
    a transposed conv, stride 2, padding 1. down: a conv with the kernel, stride 2, padding 1. The
    kernel is a constant (a buffer outside the state_dict); groups=channels applies it per channel.
    """

    def __init__(self, channels: int, up: bool):
        super().__init__()
        taps = torch.tensor(TAPS)
        kernel = torch.outer(taps, taps) / taps.sum() ** 2 * (4 if up else 1)
        self.up = up
        self.register_buffer("kernel", kernel.expand(channels, 1, 4, 4).contiguous(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kernel, channels = self.kernel.to(x.dtype), x.shape[1]
        if self.up:
            return F.conv_transpose2d(x, kernel, stride=2, padding=1, groups=channels)
        return F.conv2d(x, kernel, stride=2, padding=1, groups=channels)


def upsample(cin: int, cout: int) -> nn.Sequential:
    """G's transition: the width changes (1x1 conv) at the lower resolution, then 2x upsampling."""
    return nn.Sequential(*([conv(cin, cout)] if cin != cout else []), Resample(cout, up=True))


def downsample(cin: int, cout: int) -> nn.Sequential:
    """D's transition: 2x downsampling, then the width changes (1x1 conv) at the lower resolution."""
    return nn.Sequential(Resample(cin, up=False), *([conv(cin, cout)] if cin != cout else []))


class GenerativeBasis(nn.Module):
    """A learned (width, side, side) constant, each channel scaled by a linear function of the latent."""

    def __init__(self, latent: int, width: int, side: int):
        super().__init__()
        self.basis = nn.Parameter(torch.randn(width, side, side))
        self.linear = nn.Linear(latent, width, bias=False)
        init_weight(self.linear.weight)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return self.basis[None] * self.linear(latent)[:, :, None, None]


class DiscriminativeBasis(nn.Module):
    """A depthwise side x side conv (side x side -> 1x1), then a linear layer to `features` numbers."""

    def __init__(self, width: int, side: int, features: int):
        super().__init__()
        self.basis = nn.Conv2d(width, width, side, groups=width, bias=False)
        self.linear = nn.Linear(width, features, bias=False)
        init_weight(self.basis.weight)
        init_weight(self.linear.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.basis(x).flatten(1))


def embedding(num_classes: int, features: int, gain: float = 1.0) -> nn.Embedding:
    """The official code's bias-free Linear on one-hot labels, as a lookup: the same weights and fan-in."""
    layer = nn.Embedding(num_classes, features)
    init_weight(layer.weight, gain, fan_in=num_classes)
    return layer


class R3GANGenerator(nn.Module):
    """widths, blocks: per stage, from the first feature map (side `start`) to the image."""

    def __init__(self, z_dim: int, widths: list[int], blocks: list[int], expansion: int, group_size: int,
                 channels: int, start: int, num_classes: int = 0):  # fmt: skip
        super().__init__()
        self.z_dim, self.num_classes = z_dim, num_classes
        self.embed = embedding(num_classes, z_dim) if num_classes else None
        self.basis = GenerativeBasis(z_dim * (2 if num_classes else 1), widths[0], start)
        total = max(sum(blocks), 1)
        stages = []
        for i, (width, count) in enumerate(zip(widths, blocks, strict=True)):
            transition = [upsample(widths[i - 1], width)] if i else []
            residual = [ResidualBlock(width, expansion, group_size, total) for _ in range(count)]
            stages.append(nn.Sequential(*transition, *residual))
        self.stages = nn.Sequential(*stages)
        self.to_image = conv(widths[-1], channels)  # no tanh (see the module docstring)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.embed is not None:
            z = torch.cat([z, self.embed(labels).to(z.dtype)], 1)
        return self.to_image(self.stages(self.basis(z)))


class R3GANDiscriminator(nn.Module):
    """widths, blocks: per stage, from the image to the last feature map (side `start`)."""

    def __init__(self, widths: list[int], blocks: list[int], expansion: int, group_size: int, channels: int,
                 start: int, num_classes: int = 0):  # fmt: skip
        super().__init__()
        self.from_image = conv(channels, widths[0])  # no activation after it
        total = max(sum(blocks), 1)
        stages = []
        for i, (width, count) in enumerate(zip(widths, blocks, strict=True)):
            residual = [ResidualBlock(width, expansion, group_size, total) for _ in range(count)]
            transition = [downsample(width, widths[i + 1])] if i + 1 < len(widths) else []
            stages.append(nn.Sequential(*residual, *transition))
        self.stages = nn.Sequential(*stages)
        features = widths[-1] if num_classes else 1
        self.basis = DiscriminativeBasis(widths[-1], start, features)
        # std 1 / sqrt(features * num_classes), the official init: its 1 / sqrt(features) offsets the growth
        # of the dot product's sum over the features
        self.embed = embedding(num_classes, features, gain=1 / math.sqrt(features)) if num_classes else None

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        h = self.basis(self.stages(self.from_image(images)))
        if self.embed is None:
            return h.view(-1)
        return (h * self.embed(labels).to(h.dtype)).sum(1)  # projection: <h(x), embed(y)>


def per_stage(key: str, value: int | list[int], stages: int, resolution: int) -> list[int]:
    """An int for every stage, or a list with one entry per stage."""
    values = value if isinstance(value, list) else [value] * stages
    if len(values) != stages:
        raise GanError(f"{key}={quote(value)}: model.network=r3gan at data.resolution={resolution} has "
                       f"{stages} stages; give {stages} values")  # fmt: skip
    return values


@NETWORKS.register("r3gan")
def build_r3gan(cfg, num_classes: int = 0):
    m, d = cfg.model, cfg.data
    check_resolution(cfg)  # the one-line error naming the legal sizes (LAYOUTS)
    check_d_norm(m, ("none",), default="none")
    if m.spectral_norm:
        raise GanError("model.spectral_norm=true is not available for model.network=r3gan (it has no "
                       "normalisation layers); choose model.spectral_norm=false")  # fmt: skip
    start, stages = LAYOUTS[d.resolution]
    # model.widths is shared by G and D, as in the paper; null: G's stages all g_channels, D's all d_channels
    g_widths = per_stage("model.widths", m.widths or m.g_channels, stages, d.resolution)
    d_widths = per_stage("model.widths", m.widths or m.d_channels, stages, d.resolution)
    blocks = per_stage("model.blocks", m.blocks, stages, d.resolution)
    for width in sorted({*g_widths, *d_widths}):
        if width * m.expansion % m.group_size:
            raise GanError(f"model.group_size={m.group_size} must divide model.expansion x each stage's "
                           f"width ({m.expansion} x {width} = {m.expansion * width})")  # fmt: skip
    classes = num_classes if m.conditional else 0
    G = R3GANGenerator(m.z_dim, g_widths, blocks, m.expansion, m.group_size, d.channels, start, classes)
    # D runs from the image inwards: the same stages in reverse
    D = R3GANDiscriminator(d_widths[::-1], blocks[::-1], m.expansion, m.group_size, d.channels, start,
                           classes)  # fmt: skip
    return G, D

"""DCGAN (Radford et al. 2016): transposed convolutions, BatchNorm, LeakyReLU 0.2, N(0, 0.02) init.

Works at 28 px (7x7 start, 2 upsamplings), 32 px (4x4, 3), 64 px (4x4, 4), 128 px (4x4, 5) and
256 px (4x4, 6): one stride-2 layer per doubling of the side. Widths double from the image inwards,
as in the paper, and stop at 8x the base width (model.g_channels, model.d_channels), the widest
stage of the paper's 64 px G (8 x 128 = 1024 channels at 4x4). Up to 64 px no stage reaches the cap.
At 128 and 256 px the stages next to 4x4 stay at it: uncapped, G's 4x4 stage would have 1024 (128 px)
or 2048 (256 px) channels at base 64, and the transposed conv after it alone 8.4 M or 33.6 M weights.
With base 64, G's widths from the first feature map outwards are:

    28 px (7x7)  128 64                        32 px  256 128 64
    64 px        512 256 128 64                128 px 512 512 256 128 64
    256 px       512 512 512 256 128 64

D mirrors G: base at the image, doubling per stride-2 conv up to the cap, then one conv over the
start side to the logit. Options: a class-conditional G (conditional BatchNorm) and D (projection),
D's normalisation (model.d_norm), 3x3 stride-1 convs added at each stage of G and of D
(model.g_extra_layers, model.d_extra_layers; 0, the paper's network, by default), and a minibatch
standard deviation channel before D's last conv (model.d_mbstd_group).
"""

import torch
import torch.nn.functional as F
from torch import nn

from gan.networks._layers import LabelledSequential, MinibatchStd, Projection, check_d_norm, d_norm, g_norm
from gan.networks._resolutions import check_resolution
from gan.registry import NETWORKS

# resolution -> (side of the first feature map, number of 2x upsamplings)
LAYOUTS = {28: (7, 2), 32: (4, 3), 64: (4, 4), 128: (4, 5), 256: (4, 6)}
WIDEST = 8  # the widest stage, as a multiple of the base width


def stage_widths(base: int, stages: int) -> list[int]:
    """The feature maps' channels from the image inwards: base, 2 base, 4 base, ..., at most WIDEST base."""
    return [base * min(2**i, WIDEST) for i in range(stages)]


class DCGANGenerator(nn.Module):
    """num_classes > 0: class-conditional. The one-hot label joins z at the input (Mirza & Osindero 2014)
    and each BatchNorm's gain and bias are chosen by the label. Conditional BatchNorm alone learns
    the classes slowly: Adam moves its per-class gains by about lr per step, while the one-hot input
    reaches the first layer's weights at once (docs/results.md compares the two)."""

    def __init__(self, z_dim: int, base: int, channels: int, resolution: int, num_classes: int = 0, extra: int = 0):
        super().__init__()
        start, ups = LAYOUTS[resolution]
        self.z_dim, self.num_classes = z_dim, num_classes
        # from the start side outwards; one more upsampling then makes the image
        widths = stage_widths(base, ups)[::-1]

        def stage(width: int) -> list[nn.Module]:  # the norm and activation, then the extra 3x3 convs
            layers = [g_norm(width, num_classes), nn.ReLU(True)]
            for _ in range(extra):
                layers += [nn.Conv2d(width, width, 3, 1, 1, bias=False), g_norm(width, num_classes), nn.ReLU(True)]
            return layers

        layers = [nn.ConvTranspose2d(z_dim + num_classes, widths[0], start, 1, 0, bias=False), *stage(widths[0])]
        for cin, cout in zip(widths[:-1], widths[1:], strict=True):
            layers += [nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False), *stage(cout)]
        layers += [nn.ConvTranspose2d(widths[-1], channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = LabelledSequential(*layers)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.num_classes:
            z = torch.cat([z, F.one_hot(labels, self.num_classes).to(z.dtype)], 1)
        return self.main(z[:, :, None, None], labels)


class DCGANDiscriminator(nn.Module):
    """norm: batch (DCGAN), layer or none. num_classes > 0: a projection discriminator."""

    def __init__(self, base: int, channels: int, resolution: int, norm: str = "batch", num_classes: int = 0,
                 extra: int = 0, mbstd_group: int = 0):  # fmt: skip
        super().__init__()
        start, downs = LAYOUTS[resolution]
        # Without a norm layer the convs need biases: a bias-free LeakyReLU net is positively
        # homogeneous, D(0) = 0, and a G that outputs flat grey images would sit where D cannot push.
        bias = norm == "none"
        widths = stage_widths(base, downs)  # after each stride-2 conv; the first has no norm

        def stage(cin: int, cout: int, normed: bool = True) -> list[nn.Module]:
            """The stride-2 conv, then the extra 3x3 convs, each with the norm (but the first stage's
            stride-2 conv) and the activation."""
            layers = [nn.Conv2d(cin, cout, 4, 2, 1, bias=bias), *norm_of(cout, normed), nn.LeakyReLU(0.2, True)]
            for _ in range(extra):
                layers += [nn.Conv2d(cout, cout, 3, 1, 1, bias=bias), *norm_of(cout), nn.LeakyReLU(0.2, True)]
            return layers

        def norm_of(width: int, normed: bool = True) -> list[nn.Module]:
            return [d_norm(norm, width)] if normed and norm != "none" else []

        layers = stage(channels, widths[0], normed=False)
        for cin, cout in zip(widths[:-1], widths[1:], strict=True):
            layers += stage(cin, cout)
        if mbstd_group:  # one more channel into the last conv (and the projection)
            layers.append(MinibatchStd(mbstd_group))
        last = widths[-1] + (1 if mbstd_group else 0)
        layers += [nn.Conv2d(last, 1, start, 1, 0, bias=bias)]
        self.main = nn.Sequential(*layers)
        # the class term is a class-specific version of the last conv: <embed(y), flattened features>
        self.projection = Projection(num_classes, last * start * start) if num_classes else None

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
    check_resolution(cfg)  # the one-line error naming the legal sizes (LAYOUTS)
    norm = check_d_norm(m, ("batch", "layer", "none"), default="batch")
    classes = num_classes if m.conditional else 0
    G = DCGANGenerator(m.z_dim, m.g_channels, d.channels, d.resolution, classes, m.g_extra_layers)
    D = DCGANDiscriminator(m.d_channels, d.channels, d.resolution, norm, classes, m.d_extra_layers, m.d_mbstd_group)
    G.apply(dcgan_init)
    D.apply(dcgan_init)
    return G, D

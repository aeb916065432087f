"""Layers shared by the network families: conditional BatchNorm, the projection head, minibatch standard
deviation, D's norms, spectral norm."""

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

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


class MinibatchStd(nn.Module):
    """Appends one channel: the standard deviation of each feature over a group of `group` consecutive
    images, averaged over channels and positions, the same for every image of the group (Karras et al.
    2018, ProGAN; StyleGAN2's layer with one channel). D sees how varied a group of images is, which no
    single image shows, so a G that covers few modes is easier to tell apart.

    Groups are consecutive images, so when D scores several parts of one batch in one call (gan.steps.run_D:
    real, then generated) no group mixes two parts, as long as the group size divides each part's size.
    """

    def __init__(self, group: int):
        super().__init__()
        self.group = group

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        grouped = x.float().unflatten(0, (n // self.group, self.group))  # (groups, group, C, H, W)
        # the variance spelled out: Tensor.var's backward over this middle dimension is several times
        # slower on the CPU (docs/performance.md)
        centred = grouped - grouped.mean(1, keepdim=True)
        std = centred.square().mean(1).add(1e-8).sqrt().mean((1, 2, 3))  # one number per group
        channel = std.repeat_interleave(self.group)[:, None, None, None].expand(n, 1, h, w)
        return torch.cat([x, channel.to(x.dtype)], 1)


class SplitBatchNorm2d(nn.BatchNorm2d):
    """nn.BatchNorm2d that, while `splits` > 1, normalises each of that many equal parts of its batch with
    the part's own statistics and updates the running statistics once per part, in order: what as many
    separate calls do. D's step sets it while D sees the real and the generated batch in one call
    (gan.steps.run_D), so a BatchNorm D normalises each as it would alone. Buffers and state_dict keys
    are nn.BatchNorm2d's."""

    splits = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.splits == 1:
            return super().forward(x)
        return torch.cat([nn.BatchNorm2d.forward(self, part) for part in x.chunk(self.splits)])


def d_norm(kind: str, channels: int) -> nn.Module:
    """D's normalisation: batch; layer (over C, H, W per image, as WGAN-GP recommends); none."""
    if kind == "batch":
        return SplitBatchNorm2d(channels)
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
POWER_ITERATIONS_AT_INIT = 15  # as torch.nn.utils.parametrizations.spectral_norm


class SpectralNorm(nn.Module):
    """weight / sigma (Miyato et al. 2018), sigma = u^T W v from one power iteration per training forward,
    W the weight as an (out, in * k * k) matrix.

    torch.nn.utils.parametrizations.spectral_norm's math, random start and buffers, registered the same
    way, so the state_dict keys are its keys (parametrizations.weight.original, ...weight.0._u, ._v) and
    checkpoints of either load into the other. The one change: the power iteration writes u and v back
    with copy_, a buffer update that torch.compile captures, where torch's writes with F.normalize(out=).
    """

    def __init__(self, weight: torch.Tensor, eps: float = 1e-12):
        super().__init__()
        self.eps = eps
        matrix = weight.detach().flatten(1)
        u = matrix.new_empty(matrix.shape[0]).normal_(0, 1)
        v = matrix.new_empty(matrix.shape[1]).normal_(0, 1)
        self.register_buffer("_u", F.normalize(u, dim=0, eps=eps))
        self.register_buffer("_v", F.normalize(v, dim=0, eps=eps))
        self._power_iteration(matrix, POWER_ITERATIONS_AT_INIT)

    @torch.no_grad()
    def _power_iteration(self, matrix: torch.Tensor, iterations: int) -> None:
        u, v = self._u, self._v
        for _ in range(iterations):
            u = F.normalize(torch.mv(matrix, v), dim=0, eps=self.eps)
            v = F.normalize(torch.mv(matrix.H, u), dim=0, eps=self.eps)
        self._u.copy_(u)
        self._v.copy_(v)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        matrix = weight.flatten(1)
        if self.training:
            self._power_iteration(matrix, 1)
        # clones: a later forward updates u and v in place, and this one's backward still needs them
        sigma = torch.vdot(self._u.clone(), torch.mv(matrix, self._v.clone()))
        return weight / sigma

    def right_inverse(self, value: torch.Tensor) -> torch.Tensor:
        return value


def add_spectral_norm(module: nn.Module) -> nn.Module:
    """Spectral norm (SpectralNorm) on every conv, linear and embedding weight."""
    for layer in [m for m in module.modules() if isinstance(m, SPECTRAL_NORM_LAYERS)]:
        parametrize.register_parametrization(layer, "weight", SpectralNorm(layer.weight))
    return module

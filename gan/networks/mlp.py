"""The fully connected GAN of Goodfellow et al. (2014), as MNIST tutorials build it.

G 784->256->256->784 (ReLU, Tanh), D 784->256->256->1 (LeakyReLU 0.2).
"""

import torch
from torch import nn

from gan.networks._layers import check_d_norm
from gan.registry import NETWORKS


class MLPGenerator(nn.Module):
    def __init__(self, z_dim: int, hidden_dim: int, channels: int, resolution: int):
        super().__init__()
        self.z_dim, self.image_shape = z_dim, (channels, resolution, resolution)
        self.main = nn.Sequential(
            nn.Linear(z_dim, hidden_dim),
            nn.ReLU(True),
            nn.Linear(hidden_dim, hidden_dim),
            nn.ReLU(True),
            nn.Linear(hidden_dim, channels * resolution * resolution),
            nn.Tanh(),
        )

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.main(z).view(-1, *self.image_shape)


class MLPDiscriminator(nn.Module):
    """Returns logits: the final Sigmoid lives in the loss (BCE-with-logits)."""

    def __init__(self, hidden_dim: int, channels: int, resolution: int):
        super().__init__()
        self.main = nn.Sequential(
            nn.Linear(channels * resolution * resolution, hidden_dim),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(hidden_dim, hidden_dim),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(hidden_dim, 1),
        )

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.main(images.flatten(1)).view(-1)


@NETWORKS.register("mlp")
def build_mlp(cfg, num_classes: int = 0):
    m, d = cfg.model, cfg.data
    check_d_norm(cfg.model, ("none",), default="none")
    return (
        MLPGenerator(m.z_dim, m.hidden_dim, d.channels, d.resolution),
        MLPDiscriminator(m.hidden_dim, d.channels, d.resolution),
    )

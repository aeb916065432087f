"""The loops our pipeline is measured against, on the same 5,000 embedded digits.

- `guide_loop`: the guide's code as written: per-sample PIL ToTensor/Normalize through a
  DataLoader, MLP G/D with a Sigmoid output and BCELoss, Adam 2e-4, noise dimension 784.
- `minimal_loop`: a minimal hand-written PyTorch loop over any (G, D) pair: data as one float
  tensor indexed per batch, non-saturating BCE on logits, no EMA, logging or checkpoints.

Both return images per second over `steps` generator steps, timed end to end.
"""

import io
import time

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from gan.data import mnist5k, to_float


class GuideMNIST(Dataset):
    """What torchvision's MNIST hands the guide's loop: a PIL image per sample, then the transform."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform):
        from PIL import Image

        self.pil = [Image.fromarray(img[0].numpy(), mode="L") for img in images]
        self.labels, self.transform = labels, transform

    def __len__(self):
        return len(self.pil)

    def __getitem__(self, i):
        return self.transform(self.pil[i]), int(self.labels[i])


def guide_loop(steps: int, batch_size: int = 64) -> float:
    from torchvision import transforms

    input_dim, hidden_dim, output_dim, lr = 784, 256, 784, 0.0002
    start = time.perf_counter()
    data = mnist5k(None)
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))])
    dataloader = DataLoader(GuideMNIST(data.images, data.labels, transform), batch_size=batch_size, shuffle=True,
                            drop_last=True)  # fmt: skip  (drop_last: the guide crashes on the last partial batch)
    generator = nn.Sequential(nn.Linear(input_dim, hidden_dim), nn.ReLU(True), nn.Linear(hidden_dim, hidden_dim),
                              nn.ReLU(True), nn.Linear(hidden_dim, output_dim), nn.Tanh())  # fmt: skip
    discriminator = nn.Sequential(nn.Linear(output_dim, hidden_dim), nn.LeakyReLU(0.2, inplace=True),
                                  nn.Linear(hidden_dim, hidden_dim), nn.LeakyReLU(0.2, inplace=True),
                                  nn.Linear(hidden_dim, 1), nn.Sigmoid())  # fmt: skip
    criterion = nn.BCELoss()
    optimizer_G = torch.optim.Adam(generator.parameters(), lr=lr)
    optimizer_D = torch.optim.Adam(discriminator.parameters(), lr=lr)
    sink = io.StringIO()
    done = 0
    while done < steps:
        for real_images, _ in dataloader:
            real_images = real_images.view(-1, output_dim)
            optimizer_D.zero_grad()
            real_labels = torch.ones(batch_size, 1)
            fake_labels = torch.zeros(batch_size, 1)
            d_loss_real = criterion(discriminator(real_images), real_labels)
            fake_images = generator(torch.randn(batch_size, input_dim))
            d_loss_fake = criterion(discriminator(fake_images.detach()), fake_labels)
            d_loss = d_loss_real + d_loss_fake
            d_loss.backward()
            optimizer_D.step()
            optimizer_G.zero_grad()
            g_loss = criterion(discriminator(generator(torch.randn(batch_size, input_dim))), real_labels)
            g_loss.backward()
            optimizer_G.step()
            # the guide prints both losses every step: keep its two host syncs, not the terminal I/O
            print(f"d_loss: {d_loss.item():.4f}, g_loss: {g_loss.item():.4f}", file=sink)
            done += 1
            if done == steps:
                break
    return steps * batch_size / (time.perf_counter() - start)


def minimal_loop(G: nn.Module, D: nn.Module, steps: int, batch_size: int, lr=2e-4, betas=(0.5, 0.999)) -> float:
    bce = nn.functional.binary_cross_entropy_with_logits
    start = time.perf_counter()
    real_all = to_float(mnist5k(None).images)
    opt_G = torch.optim.Adam(G.parameters(), lr=lr, betas=betas)
    opt_D = torch.optim.Adam(D.parameters(), lr=lr, betas=betas)
    z_dim = G.z_dim
    done = 0
    while done < steps:
        order = torch.randperm(len(real_all))
        for i in range(0, len(order) - batch_size + 1, batch_size):
            real = real_all[order[i : i + batch_size]]
            with torch.no_grad():
                fake = G(torch.randn(batch_size, z_dim))
            real_logits, fake_logits = D(real), D(fake)
            d_loss = bce(real_logits, torch.ones_like(real_logits)) + bce(fake_logits, torch.zeros_like(fake_logits))
            opt_D.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_D.step()
            fake_logits = D(G(torch.randn(batch_size, z_dim)))
            g_loss = bce(fake_logits, torch.ones_like(fake_logits))
            opt_G.zero_grad(set_to_none=True)
            g_loss.backward()
            opt_G.step()
            done += 1
            if done == steps:
                break
    return steps * batch_size / (time.perf_counter() - start)

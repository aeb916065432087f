"""The loops our pipeline is measured against, on the same images.

- `guide_loop`: the guide's code as written: per-sample PIL ToTensor/Normalize through a
  DataLoader, MLP G/D with a Sigmoid output and BCELoss, Adam 2e-4, noise dimension 784.
- `minimal_loop`: a minimal hand-written PyTorch loop over any (G, D) pair: data as one float
  tensor indexed per batch, D frozen during G's backward, no EMA, logging or checkpoints. A
  `StepSpec` matches a preset's step (gan.losses' loss and WGAN-GP penalty, D steps per G step,
  labels, DiffAugment); a `Variant` switches on one CPU optimisation or several (channels_last,
  compile, bf16, ...).

Both return a `LoopTiming`: images per second over all `steps` generator steps timed end to end
(set-up and data loading included), and, over the windows of `warmup` steps after the first
one (compilation and first-call costs excluded), the mean and fastest-window rates, per second
of wall time and per second of the process's CPU time.
"""

import io
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from bench.measure import window_rates
from gan.augment import DiffAugment
from gan.data import ImageData, as_tensor, make_dataloader, to_float
from gan.datasets.mnist5k import Mnist5k
from gan.losses import GanLoss, build_loss, gradient_penalty, interpolate, r1_penalty
from gan.losses.bce import NonSaturatingLoss
from gan.steps import input_gradients


@dataclass(frozen=True)
class LoopTiming:
    img_per_s: float  # over all steps, set-up and data loading included
    warmup_s: float  # set-up plus the warm-up steps (compilation happens there)
    rates: dict  # after the warm-up: mean and fastest window of `warmup` steps, per wall and CPU second


@dataclass(frozen=True)
class StepSpec:
    """What one training step does, so that the minimal loop can match a preset's step."""

    loss: GanLoss = field(default_factory=NonSaturatingLoss)  # gan.losses' loss, its WGAN-GP weight included
    n_critic: int = 1  # D steps per G step, each on its own real batch
    conditional: bool = False  # pass the real batch's labels to G and D
    augment: tuple[str, ...] = ()  # DiffAugment policy applied to every input of D

    @classmethod
    def of(cls, cfg) -> "StepSpec":
        return cls(build_loss(cfg), cfg.train.n_critic, cfg.model.conditional, tuple(cfg.augment.policy))

    @staticmethod
    def unsupported(cfg) -> str | None:
        """Why the minimal loop cannot reproduce this config's step, or None."""
        if cfg.augment.policy and (cfg.augment.p != 1 or cfg.schedule.augment_p.shape != "constant"):
            return "the minimal step applies DiffAugment to every image (augment.p = 1)"
        return None


@dataclass(frozen=True)
class Variant:
    """CPU optimisations, off by default: the baseline is fp32, contiguous, eager, torch's default Adam."""

    channels_last: bool = False  # NHWC memory format for conv nets and their inputs
    compile: bool = False  # torch.compile (inductor) on G and D
    bf16: bool = False  # torch.autocast("cpu", bfloat16) around every forward
    adam: str = "default"  # default (single-tensor loop on CPU), foreach or fused
    set_to_none: bool = True  # zero_grad(set_to_none=...)
    item_sync: bool = False  # read both losses with .item() every step, as the guide prints them
    dataloader: bool = False  # batches through gan.data's DataLoader (uint8, per-batch to_float)
    threads: int | None = None  # torch.set_num_threads for the run; None = unchanged
    device: str = "cpu"  # where the networks, the data and the noise live (bench/gpu.py: cuda)


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


class Clock:
    """Wall and CPU time marks at the end of every window of `warmup` steps (the first one ends the
    warm-up); with warmup=0, only end-to-end img/s."""

    def __init__(self, steps: int, warmup: int, batch_size: int, device: str = "cpu"):
        self.steps, self.window, self.batch_size = steps, warmup, batch_size
        self.sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
        self.start = time.perf_counter()
        self.marks: list[tuple[float, float]] = []

    def step_done(self, done: int) -> None:
        if self.window and done % self.window == 0:
            self.sync()
            self.marks.append((time.perf_counter(), time.process_time()))

    def timing(self) -> LoopTiming:
        self.sync()
        end = time.perf_counter()
        warmup_s = self.marks[0][0] - self.start if self.marks else 0.0
        return LoopTiming(self.steps * self.batch_size / (end - self.start), warmup_s,
                          window_rates(self.marks, self.window * self.batch_size))  # fmt: skip


class GuideGAN:
    """The guide's networks, optimizers and step as written: MLP G (z of 784) and D with a Sigmoid
    output, BCELoss, Adam 2e-4 with PyTorch's default betas, batches from torchvision's transform."""

    input_dim, hidden_dim, output_dim, lr = 784, 256, 784, 0.0002

    def __init__(self, batch_size: int = 64):
        self.batch_size = batch_size
        i, h, o = self.input_dim, self.hidden_dim, self.output_dim
        self.generator = nn.Sequential(nn.Linear(i, h), nn.ReLU(True), nn.Linear(h, h), nn.ReLU(True),
                                       nn.Linear(h, o), nn.Tanh())  # fmt: skip
        self.discriminator = nn.Sequential(nn.Linear(o, h), nn.LeakyReLU(0.2, inplace=True), nn.Linear(h, h),
                                           nn.LeakyReLU(0.2, inplace=True), nn.Linear(h, 1), nn.Sigmoid())  # fmt: skip
        self.criterion = nn.BCELoss()
        self.optimizer_G = torch.optim.Adam(self.generator.parameters(), lr=self.lr)
        self.optimizer_D = torch.optim.Adam(self.discriminator.parameters(), lr=self.lr)
        self.sink = io.StringIO()

    def dataloader(self, data: ImageData) -> DataLoader:
        from torchvision import transforms

        transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))])
        return DataLoader(GuideMNIST(data.images, data.labels, transform), batch_size=self.batch_size, shuffle=True,
                          drop_last=True)  # fmt: skip  (drop_last: the guide crashes on the last partial batch)

    def step(self, real_images: torch.Tensor) -> None:
        batch_size, output_dim, criterion = self.batch_size, self.output_dim, self.criterion
        generator, discriminator = self.generator, self.discriminator
        real_images = real_images.view(-1, output_dim)
        self.optimizer_D.zero_grad()
        real_labels = torch.ones(batch_size, 1)
        fake_labels = torch.zeros(batch_size, 1)
        d_loss_real = criterion(discriminator(real_images), real_labels)
        fake_images = generator(torch.randn(batch_size, self.input_dim))
        d_loss_fake = criterion(discriminator(fake_images.detach()), fake_labels)
        d_loss = d_loss_real + d_loss_fake
        d_loss.backward()
        self.optimizer_D.step()
        self.optimizer_G.zero_grad()
        g_loss = criterion(discriminator(generator(torch.randn(batch_size, self.input_dim))), real_labels)
        g_loss.backward()
        self.optimizer_G.step()
        # the guide prints both losses every step: keep its two host syncs, not the terminal I/O
        print(f"d_loss: {d_loss.item():.4f}, g_loss: {g_loss.item():.4f}", file=self.sink)
        self.sink.seek(0)
        self.sink.truncate()


def guide_loop(steps: int, batch_size: int = 64, warmup: int = 0) -> LoopTiming:
    clock = Clock(steps, warmup, batch_size)
    gan = GuideGAN(batch_size)
    dataloader = gan.dataloader(mnist5k())
    done = 0
    while done < steps:
        for real_images, _ in dataloader:
            gan.step(real_images)
            done += 1
            clock.step_done(done)
            if done == steps:
                break
    return clock.timing()


# --------------------------------------------------------------------------- the minimal loop


def mnist5k() -> ImageData:
    """The 5,000 embedded digits held in memory, as the guide's loop holds its data."""
    images, labels = Mnist5k().load()
    return ImageData(images, labels, 10)


def tensor_batches(data: ImageData, batch_size: int, variant: Variant):
    """Endless shuffled epochs of full batches: (float images in [-1, 1], labels)."""
    if variant.dataloader:  # our pipeline's path: uint8 batches from a DataLoader, normalised per batch
        loader = make_dataloader(data, batch_size)
        while True:
            for images, labels in loader:
                yield to_float(images), labels
    real_all, labels_all = to_float(as_tensor(data.images).to(variant.device)), data.labels.to(variant.device)
    if variant.channels_last:
        real_all = real_all.contiguous(memory_format=torch.channels_last)
    while True:
        order = torch.randperm(len(real_all), device=variant.device)
        for i in range(0, len(order) - batch_size + 1, batch_size):
            index = order[i : i + batch_size]
            yield real_all[index], labels_all[index]


def adam(module: nn.Module, lr: float, betas, variant: Variant) -> torch.optim.Adam:
    kwargs = {"foreach": {"foreach": True}, "fused": {"fused": True}}.get(variant.adam, {})
    return torch.optim.Adam(module.parameters(), lr=lr, betas=betas, **kwargs)


def wgan_gp(D, real, fake, labels, augment) -> torch.Tensor:
    """gan.losses' WGAN-GP penalty on D's input gradients at interpolates of real and fake images."""
    x_hat = interpolate(real, fake).requires_grad_(True)
    (grads,) = input_gradients([D(augment(x_hat), labels)], [x_hat], accelerator=None)
    return gradient_penalty(grads)


def minimal_loop(G: nn.Module, D: nn.Module, steps: int, batch_size: int, lr=2e-4, betas=(0.5, 0.999), *,
                 spec: StepSpec = StepSpec(), variant: Variant = Variant(), warmup: int = 0,
                 load: Callable[[], ImageData] = lambda: mnist5k()) -> LoopTiming:  # fmt: skip
    """`steps` G steps of `spec` on the images `load` returns (called inside the timed region)."""
    clock = Clock(steps, warmup, batch_size, variant.device)
    G, D = G.to(variant.device), D.to(variant.device)
    if variant.channels_last:
        G, D = G.to(memory_format=torch.channels_last), D.to(memory_format=torch.channels_last)
    opt_G, opt_D = adam(G, lr, betas, variant), adam(D, lr, betas, variant)
    G_run, D_run = (torch.compile(G), torch.compile(D)) if variant.compile else (G, D)
    device_type = torch.device(variant.device).type
    autocast = (lambda: torch.autocast(device_type, dtype=torch.bfloat16)) if variant.bf16 else nullcontext
    augment, loss, penalties = DiffAugment(list(spec.augment)), spec.loss, spec.loss.penalties
    batches = tensor_batches(load(), batch_size, variant)
    z_dim = G.z_dim
    d_steps = 0
    for done in range(1, steps + 1):
        for _ in range(spec.n_critic):
            real, labels = next(batches)
            labels = labels if spec.conditional else None
            with torch.no_grad(), autocast():
                fake = G_run(torch.randn(batch_size, z_dim, device=variant.device), labels)
            r1_due, r2_due = penalties.r1_due(d_steps), penalties.r2_due(d_steps)
            d_steps += 1
            real, fake = real.requires_grad_(r1_due), fake.requires_grad_(r2_due)
            with autocast():
                real_out, fake_out = D_run(augment(real), labels), D_run(augment(fake), labels)
                d_loss = loss.d_loss(real_out.float(), fake_out.float())
                if penalties.gp_weight > 0:
                    d_loss = d_loss + penalties.gp_weight * wgan_gp(D_run, real, fake.float(), labels, augment)
                for due, weight, out, x in ((r1_due, penalties.r1_weight, real_out, real),
                                            (r2_due, penalties.r2_weight, fake_out, fake)):  # fmt: skip
                    if due:  # R1 on real, R2 on generated images, lazily every r1_every-th D step
                        (grads,) = input_gradients([out], [x], accelerator=None)
                        d_loss = d_loss + weight / 2 * penalties.r1_every * r1_penalty(grads)
            opt_D.zero_grad(set_to_none=variant.set_to_none)
            d_loss.backward()
            opt_D.step()
        D.requires_grad_(False)  # G's backward needs D's input gradients only
        with autocast():
            fake = G_run(torch.randn(batch_size, z_dim, device=variant.device), labels)
            fake_out = D_run(augment(fake), labels).float()
            if loss.g_needs_real:  # relativistic: the last real batch, as the package's step
                with torch.no_grad():
                    real_out = D_run(augment(real.detach()), labels).float()
                g_loss = loss.g_loss(fake_out, real_out)
            else:
                g_loss = loss.g_loss(fake_out)
        opt_G.zero_grad(set_to_none=variant.set_to_none)
        g_loss.backward()
        opt_G.step()
        D.requires_grad_(True)
        if variant.item_sync:
            d_loss.item()
            g_loss.item()
        clock.step_done(done)
    return clock.timing()

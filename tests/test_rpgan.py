"""loss.name=rpgan and R2, in-process: the losses and the D step's penalties against hand computations."""

from types import SimpleNamespace

import torch
import torch.nn.functional as F

from gan.config import load_config
from gan.losses import Penalties, build_loss
from gan.steps import Nets, d_step, g_step, regularize

NO_SCALER = SimpleNamespace(scaler=None)


class SmallD(torch.nn.Module):
    """A non-linear D, so that R1 and R2 differ from point to point."""

    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 6), torch.nn.Softplus(),
                                       torch.nn.Linear(6, 1))  # fmt: skip

    def forward(self, x, labels=None):
        return self.net(x).squeeze(1)


class FixedG(torch.nn.Module):
    """G(z) = z shaped as an image, with one parameter so that it can be stepped."""

    z_dim = 4

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))

    def forward(self, z, labels=None):
        return (self.scale * z).view(-1, 1, 2, 2)


def test_rpgan_losses_are_the_relativistic_pairing_of_the_paper():
    loss = build_loss(load_config(None, ["loss.name=rpgan", "loss.r1_weight=0.1", "loss.r2_weight=0.1"]))
    real, fake = torch.tensor([2.0, -1.0, 0.5]), torch.tensor([0.0, 1.0, 0.5])
    assert loss.g_needs_real
    torch.testing.assert_close(loss.d_loss(real, fake), F.softplus(fake - real).mean())
    torch.testing.assert_close(loss.g_loss(fake, real), F.softplus(real - fake).mean())
    by_hand = sum(torch.log1p(torch.exp(-(r - f))) for r, f in zip(real, fake, strict=True)) / 3
    torch.testing.assert_close(loss.d_loss(real, fake), by_hand)
    assert loss.penalties == Penalties(r1_weight=0.1, r2_weight=0.1)


def per_image_squared_norms(D, x):
    """|grad_x D(x_i)|^2 for each image i, one autograd.grad per image."""
    out = []
    for i in range(len(x)):
        xi = x[i : i + 1].detach().requires_grad_(True)
        (g,) = torch.autograd.grad(D(xi).sum(), xi)
        out.append(g.square().sum())
    return torch.stack(out)


def test_r1_and_r2_equal_the_hand_computation_with_autograd_grad():
    torch.manual_seed(0)
    D = SmallD()
    nets = Nets(None, D, None, None, None, z_dim=4)
    penalties = Penalties(r1_weight=0.3, r2_weight=0.7, r1_every=2)
    real = torch.randn(5, 1, 2, 2, requires_grad=True)
    fake = torch.randn(5, 1, 2, 2, requires_grad=True)
    labels = torch.zeros(5, dtype=torch.long)
    total, stats = regularize(nets, penalties, real, D(real), fake, D(fake), labels, NO_SCALER, due=(True, True))
    r1, r2 = per_image_squared_norms(D, real).mean(), per_image_squared_norms(D, fake).mean()
    torch.testing.assert_close(stats["penalty/r1"], r1)
    torch.testing.assert_close(stats["penalty/r2"], r2)
    torch.testing.assert_close(total, 2 * (0.3 / 2 * r1 + 0.7 / 2 * r2))  # lazy: weighted by r1_every
    assert [i for i in range(6) if penalties.r2_due(i)] == [0, 2, 4]
    # the penalty trains D: its gradient w.r.t. D's weights is that of the hand computation
    weights = [p for p in D.parameters() if p.ndim == 2]  # the output bias does not move an input gradient
    grads = torch.autograd.grad(total, weights)
    by_hand = torch.autograd.grad(2 * (0.3 / 2 * hand_penalty(D, real) + 0.7 / 2 * hand_penalty(D, fake)), weights)
    for a, b in zip(grads, by_hand, strict=True):
        torch.testing.assert_close(a, b)


def hand_penalty(D, x):
    x = x.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(D(x).sum(), x, create_graph=True)
    return g.flatten(1).square().sum(1).mean()


class Accel(SimpleNamespace):
    """The few Accelerator methods the steps call, for one process."""

    scaler = None
    num_processes = 1

    def autocast(self):
        return torch.autocast("cpu", enabled=False)

    def backward(self, loss):
        loss.backward()

    def no_sync(self, model):
        return torch.autocast("cpu", enabled=False)


def test_the_steps_use_rpgan_with_a_real_batch_in_g_step():
    torch.manual_seed(1)
    G, D = FixedG(), SmallD()
    opt_G, opt_D = torch.optim.SGD(G.parameters(), lr=0.1), torch.optim.SGD(D.parameters(), lr=0.1)
    nets = Nets(G, D, None, opt_G, opt_D, z_dim=4)
    loss = build_loss(load_config(None, ["loss.name=rpgan", "loss.r1_weight=0.5", "loss.r2_weight=0.5"]))
    real, labels = torch.randn(6, 1, 2, 2), torch.zeros(6, dtype=torch.long)
    stats = d_step(nets, loss, real, labels, Accel())
    assert {"penalty/r1", "penalty/r2", "loss/D"} <= set(stats)
    before = G.scale.item()
    torch.manual_seed(2)
    out = g_step(nets, loss, 6, labels, Accel(), real)
    torch.manual_seed(2)
    z = torch.randn(6, 4)
    with torch.no_grad():
        expected = F.softplus(D(real) - D((before * z).view(-1, 1, 2, 2))).mean()
    torch.testing.assert_close(out["loss/G"], expected)
    assert G.scale.item() != before

"""Changes to gan/ measured against the loop as it is: each is a context manager that patches our
loop for one run of the bench (the study's "ours + ..." rows), and restores it after.

- adam_with(fused=False, ...): build_nets's Adam with these arguments instead of its own;
- step_grad_norms(): both gradient norms every step, as the loop did before (it now takes them
  at the log steps only);
- channels_last_networks(): G and D in NHWC memory format after build_networks;
- running_means(): RunningMeans below in place of gan.tracking.WindowMeans.
"""

from contextlib import contextmanager

import torch


@contextmanager
def patched(obj, name: str, value):
    original = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, original)


@contextmanager
def adam_with(**extra):
    """torch.optim.Adam, as gan.train_loop.build_nets calls it, with `extra` arguments (foreach, fused) winning."""
    original = torch.optim.Adam

    class PatchedAdam(original):
        def __init__(self, params, **kwargs):
            super().__init__(params, **(kwargs | extra))

    with patched(torch.optim, "Adam", PatchedAdam):
        yield


@contextmanager
def channels_last_networks():
    from gan import train_loop

    original = train_loop.build_networks

    def build(*args, **kwargs):
        return tuple(net.to(memory_format=torch.channels_last) for net in original(*args, **kwargs))

    with patched(train_loop, "build_networks", build):
        yield


@contextmanager
def running_means():
    from gan import train_loop

    with patched(train_loop, "WindowMeans", RunningMeans):
        yield


@contextmanager
def step_grad_norms():
    """Both gradient norms computed every step (then dropped; their MeanMetric updates not counted)."""
    from gan import train_loop

    original = train_loop.update_ema

    def update_ema_and_norms(nets, accelerator):
        original(nets, accelerator)
        train_loop.grad_norm(nets.G), train_loop.grad_norm(nets.D)

    with patched(train_loop, "update_ema", update_ema_and_norms):
        yield


class RunningMeans:
    """Proposed gan.tracking.WindowMeans: the same interface and means, without torchmetrics.

    A running sum per scalar (one tensor add per scalar and step, no host sync); compute() sums
    across processes in one all-reduce and reads the sums once. torchmetrics' MeanMetric.update
    costs ~65 us of Python per call here (cProfile), ~0.4 ms for a step's six scalars: ~2% of the
    vanilla preset's step, below what this shared machine resolves.
    """

    def __init__(self, device):
        self.device = device
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}

    def update(self, values: dict) -> None:
        for name, value in values.items():
            value = torch.as_tensor(value, dtype=torch.float32, device=self.device).detach()
            self.sums[name] = self.sums[name] + value if name in self.sums else value
            self.counts[name] = self.counts.get(name, 0) + 1

    def compute(self) -> dict[str, float]:
        """Called on every process (one all-reduce under DDP); resets the window."""
        names = sorted(self.sums)
        totals = torch.stack([self.sums[name] for name in names])
        world = 1
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(totals)
            world = torch.distributed.get_world_size()
        out = {name: total / (self.counts[name] * world) for name, total in zip(names, totals.tolist(), strict=True)}
        self.sums, self.counts = {}, {}
        return out

"""FLOPs of a preset's training step, counted on the real step, and the machine's measured matmul peak.

FlopCounterMode counts matrix multiplications and convolutions, forward and backward (a multiply-add
is 2 FLOPs); elementwise work (activations, norms, Adam, EMA) is not counted, as in the usual MFU.
"""

import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from bench.measure import cpu_flags

NATIVE_BF16 = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags of CPUs with bf16 matmul instructions


class _GlobalOnly:
    """Stands in for FlopCounterMode's per-module tracker: everything is counted under 'Global'."""

    parents = {"Global"}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class StepFlopCounter(FlopCounterMode):
    """FlopCounterMode without its per-module hooks, which make autograd.grad(create_graph=True) fail
    ('A leaf node was passed to _will_engine_execute_node'): the gradient penalties need it."""

    def __init__(self):
        super().__init__(display=False)
        self.mod_tracker = _GlobalOnly()


COUNT_BATCH = 8  # images per batch while counting: the counted ops are linear in the batch


def count_step_flops(cfg) -> dict:
    """FLOPs of one D step and one G step of our loop (gan.steps), per image of the preset's batch.

    The steps run once for real on the CPU, on a batch of COUNT_BATCH: every counted op (a matmul or
    convolution over the batch dimension) is linear in the batch, and a small batch keeps the ResNet
    presets' count short. `per_image` is per image of a G step's batch, the unit of img/s:
    (n_critic D steps + 1 G step) / batch.
    """
    from accelerate import Accelerator

    from gan.data import build_data, make_dataloader, to_float
    from gan.losses import build_loss
    from gan.steps import d_step, g_step
    from gan.train_loop import build_nets

    accelerator = Accelerator()
    data = build_data(cfg)
    batch = min(COUNT_BATCH, cfg.train.batch_size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        nets, loader = build_nets(cfg, data.num_classes, accelerator, make_dataloader(data, batch))
        real, labels = next(iter(loader))
        loss_fn = build_loss(cfg)
        with StepFlopCounter() as counter:
            d_step(nets, loss_fn, to_float(real), labels, accelerator)
        d_flops = counter.get_total_flops()
        with StepFlopCounter() as counter:
            g_step(nets, loss_fn, len(real), labels, accelerator, to_float(real) if loss_fn.g_needs_real else None)
        g_flops = counter.get_total_flops()
    per_image = (cfg.train.n_critic * d_flops + g_flops) / batch
    return {"d_step_per_image": d_flops / batch, "g_step_per_image": g_flops / batch, "n_critic": cfg.train.n_critic,
            "per_image": per_image, "per_g_step": per_image * cfg.train.batch_size, "counted_at_batch": batch}  # fmt: skip


def matmul_peak(n: int = 2048, dtype=torch.float32, repeats: int = 5) -> dict:
    """FLOP/s of an n x n by n x n matmul (2 n^3 FLOPs), best of `repeats`, with the current threads."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b  # first call: allocation and kernel selection
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return {"n": n, "dtype": str(dtype).removeprefix("torch."), "flop_per_s": 2 * n**3 / best,
            "threads": torch.get_num_threads()}  # fmt: skip


class PeakMeter:
    """The machine's matmul peak, sampled again and again through the run (before every alternated
    round) and kept as the fastest sample: other jobs on the machine can only slow a sample down.

    bf16 is sampled only on a CPU with bf16 matmul instructions (NATIVE_BF16): elsewhere torch
    emulates bf16 matmuls, orders of magnitude slower than fp32, and a sample would take minutes.
    """

    def __init__(self, n: int = 2048):
        self.n = n
        native_bf16 = bool(cpu_flags() & set(NATIVE_BF16))
        self.dtypes = {"fp32": torch.float32} | ({"bf16": torch.bfloat16} if native_bf16 else {})
        self.samples: dict[str, list[float]] = {name: [] for name in self.dtypes}

    def sample(self, repeats: int = 3) -> None:
        for name, dtype in self.dtypes.items():
            self.samples[name].append(matmul_peak(self.n, dtype, repeats)["flop_per_s"])

    @property
    def fp32(self) -> float:
        return max(self.samples["fp32"])

    def summary(self) -> dict:
        return {dtype: {"n": self.n, "flop_per_s": max(s), "median_flop_per_s": sorted(s)[len(s) // 2],
                        "samples": len(s), "threads": torch.get_num_threads()}
                for dtype, s in self.samples.items()}  # fmt: skip

"""WindowMeans: the means torchmetrics' MeanMetric gave (its former implementation), a scalar with no update
in the window left out, and under DDP the mean over every process's values (2 gloo processes)."""

import random

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from helpers import free_port
from torchmetrics.aggregation import MeanMetric

from gan.tracking import WindowMeans


def steps_of_a_window(rank: int, count: int = 7) -> list[dict]:
    """Losses every step, lazy R1 every third step, a norm at the window's last step; floats and tensors."""
    rng = random.Random(rank)
    steps = []
    for i in range(count):
        values = {"loss/D": torch.tensor(rng.uniform(-2, 2)), "loss/G": rng.uniform(0, 3)}
        if i % 3 == 0:
            values["penalty/r1"] = torch.tensor(rng.uniform(0, 1))
        if i == count - 1:
            values["grad_norm/G"] = torch.tensor(rng.uniform(0, 5))
        steps.append(values)
    return steps


def test_window_means_equal_meanmetric_and_reset():
    means, reference = WindowMeans(torch.device("cpu")), {}
    for values in steps_of_a_window(0):
        means.update(values)
        for name, value in values.items():
            reference.setdefault(name, MeanMetric(nan_strategy="disable")).update(value)
    out = means.compute()
    assert list(out) == sorted(reference)
    for name, metric in reference.items():
        assert out[name] == pytest.approx(float(metric.compute()), rel=1e-6)
    means.update({"loss/D": torch.tensor(1.0)})  # a new window: only what it saw
    assert means.compute() == {"loss/D": 1.0}
    assert means.compute() == {}


def ranks_mean(rank: int, port: int, results) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        means = WindowMeans(torch.device("cpu"))
        for values in steps_of_a_window(rank):
            means.update(values)
        results[rank] = means.compute()
    finally:
        dist.destroy_process_group()


def test_window_means_under_ddp_are_means_over_every_process():
    results = mp.Manager().dict()
    mp.spawn(ranks_mean, args=(free_port(), results), nprocs=2)
    values = [v for rank in (0, 1) for v in steps_of_a_window(rank)]
    assert results[0] == results[1]
    for name, mean in results[0].items():
        seen = [float(v[name]) for v in values if name in v]
        assert mean == pytest.approx(sum(seen) / len(seen), rel=1e-6)

"""Why gan.networks._layers.MinibatchStd spells its variance out: the layer against Tensor.var, side by side.

The layer's input in cgan_mnist_deep with model.d_mbstd_group=4: D's last feature map for the real and
the generated batch in one call, (128, 64, 7, 7), grouped by 4. Forward and backward, alternated. The
Tensor.var side computes the per-group numbers only; the layer also builds and appends its channel.

    python -m bench.mbstd
"""

import time

import torch

from gan.networks._layers import MinibatchStd

SHAPE, GROUP, CALLS, ROUNDS = (128, 64, 7, 7), 4, 300, 3


def with_var(x: torch.Tensor) -> torch.Tensor:
    grouped = x.float().unflatten(0, (x.shape[0] // GROUP, GROUP))
    return grouped.var(1, unbiased=False).add(1e-8).sqrt().mean((1, 2, 3))


def ms_per_call(fn, x: torch.Tensor) -> float:
    for _ in range(20):
        fn(x).sum().backward()
    start = time.perf_counter()
    for _ in range(CALLS):
        fn(x).sum().backward()
    return (time.perf_counter() - start) / CALLS * 1e3


def main() -> None:
    x = torch.randn(SHAPE, requires_grad=True)
    layer = MinibatchStd(GROUP)
    assert torch.allclose(with_var(x), layer(x)[::GROUP, -1, 0, 0], rtol=1e-4)  # the same numbers
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, input {tuple(SHAPE)}, groups of {GROUP}")
    for round_ in range(1, ROUNDS + 1):
        var_ms, layer_ms = ms_per_call(with_var, x), ms_per_call(layer, x)
        print(f"round {round_}: Tensor.var {var_ms:.2f} ms, MinibatchStd {layer_ms:.2f} ms per forward and "
              f"backward: {var_ms / layer_ms:.1f}x")  # fmt: skip


if __name__ == "__main__":
    main()

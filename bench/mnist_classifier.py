"""Train the MNIST classifier whose penultimate layer is fd_mnist's feature space, and write its weights.

python -m bench.mnist_classifier [--out gan/evaluation/mnist_classifier.safetensors]

Data: the embedded mnist5k digits (the default data set); the last 100 of each class (1,000,
`held_out` in gan/evaluation/mnist_classifier.py) held out, the other 4,000 trained on. Adam, a fixed
seed for the initialisation and the batch order, one thread and deterministic algorithms. Prints the
held-out accuracy and the file's sha256; the shipped file's is WEIGHTS_SHA256 in
gan/evaluation/mnist_classifier.py, which the loader checks: after retraining into the package, put the
printed sha256 there (fd_mnist's settings key changes with it, so every checkpoint is evaluated again).

Reproducibility: on the machine that wrote the shipped file (2 cores of an AMD EPYC, torch 2.14.1),
three runs, one of them beside other CPU-heavy processes, wrote byte-identical files, the shipped one.
Another torch build or CPU may round differently, and then gives another sha256: the loader refuses
such a file until WEIGHTS_SHA256 is updated. It takes 10-20 s.
"""

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from gan.config import load_config
from gan.data import as_tensor, build_data, to_float
from gan.evaluation.mnist_classifier import WEIGHTS, WEIGHTS_SHA256, MnistClassifier, file_sha256, held_out
from gan.files import write_atomic

SEED = 0
EPOCHS = 10
BATCH_SIZE = 50
LEARNING_RATE = 1e-3


def digits() -> tuple[torch.Tensor, torch.Tensor]:
    """mnist5k: float images (N, 1, 28, 28) in [-1, 1] and their labels."""
    data = build_data(load_config(None, []), say=lambda *_: None)
    return to_float(as_tensor(data.images)), data.labels


@torch.no_grad()
def accuracy(model: MnistClassifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    model.eval()
    return (model(images)[1].argmax(1) == labels).float().mean().item()


def train(images: torch.Tensor, labels: torch.Tensor) -> MnistClassifier:
    torch.manual_seed(SEED)
    model = MnistClassifier()
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    order = torch.Generator().manual_seed(SEED)
    for _ in range(EPOCHS):
        model.train()
        for batch in torch.randperm(len(images), generator=order).split(BATCH_SIZE):
            loss = F.cross_entropy(model(images[batch])[1], labels[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return model


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.mnist_classifier", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=WEIGHTS, help="the safetensors file to write")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    images, labels = digits()
    start = time.perf_counter()
    test = held_out(labels)
    model = train(images[~test], labels[~test])
    test_accuracy = accuracy(model, images[test], labels[test])
    state = {key: value.contiguous() for key, value in model.state_dict().items()}
    write_atomic(args.out, lambda tmp: save_file(state, tmp))
    sha256 = file_sha256(args.out)
    print(f"trained on {int((~test).sum())} digits in {time.perf_counter() - start:.1f} s")
    print(f"held-out accuracy: {test_accuracy:.4f} ({int(test.sum())} digits)")
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes), sha256 {sha256}")
    if sha256 != WEIGHTS_SHA256:
        print(f"differs from WEIGHTS_SHA256 {WEIGHTS_SHA256}: put the new sha256 in gan/evaluation/mnist_classifier.py")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

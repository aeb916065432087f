"""Where a run's FID gap lies, for a run on MNIST digits: class adherence, pixel levels, faint background.

    python -m bench.gap RUN [--num-samples 2000] [--seed 0] [--faint 10]

Draws --num-samples images from the run's newest checkpoint (G_ema where there is one) with the
evaluator's latents (`evaluate.py`'s seed and class draw, so the images are those its FID scored), then
prints:
- class adherence (conditional runs): the share of images the committed MNIST classifier
  (gan/evaluation/mnist_classifier.py, the features of fd_mnist) assigns to the class G was asked
  for, per class, beside the classifier's accuracy on its held-out real digits;
- the share of pixels at each grey level band, real against generated;
- FID of the images as drawn and with their faint pixels (grey levels below --faint) set to 0, against
  the run's training images, with the evaluator's Inception weights and cached real statistics.
If the second FID is clearly lower, the gap lies in a faint background G leaves; if the classes are
followed about as well as real digits are classified, an auxiliary classifier in D has little to fix.
"""

import functools
from argparse import ArgumentParser
from pathlib import Path

import torch

from gan import checkpoint as ckpt
from gan.data import as_tensor, build_data, to_float
from gan.errors import GanError
from gan.evaluation.mnist_classifier import MnistClassifier, held_out, load_weights
from gan.evaluation.real_stats import real_stats
from gan.samples import check_seed, generate_images, sample_latents

BANDS = (0, 1, 10, 50, 100, 150, 200, 250, 255, 256)  # grey-level bands: [0,1) is exactly black, [255,256) full white
LAYER = "2048"  # Inception's pool features, FID's
MAX_SAMPLES = 50_000  # the generated images are held in memory, with their Inception features


@functools.cache
def classifier() -> MnistClassifier:
    """The committed MNIST classifier, its weights checked and read once."""
    model = MnistClassifier()
    model.load_state_dict(load_weights())
    return model.eval()


def classified(images: torch.Tensor) -> torch.Tensor:
    """The MNIST classifier's class for each uint8 image (a tensor, an array or a prepared set's memory map)."""
    with torch.no_grad():
        return torch.cat([classifier()(to_float(as_tensor(images[i : i + 500])))[1].argmax(1)
                          for i in range(0, len(images), 500)])  # fmt: skip


def bands(images: torch.Tensor) -> list[float]:
    counts = torch.histc(images.float(), bins=256, min=0, max=256)
    return [float(counts[lo:hi].sum() / images.numel()) for lo, hi in zip(BANDS[:-1], BANDS[1:], strict=True)]


def fids(cfg, images, digest: str, variants: dict, batch_size: int = 200) -> dict:
    """FID of each {name: uint8 images} against the run's training images (the evaluator's cache)."""
    from accelerate import Accelerator

    from gan.evaluation.features import create_extractor, image_features
    from gan.evaluation.inception import resolve_weights
    from gan.evaluation.metrics.fid import frechet_distance

    accelerator = Accelerator(cpu=True)
    weights = resolve_weights(cfg.eval.inception_weights)
    extractor = create_extractor(weights, [LAYER], accelerator.device)
    real = real_stats(cfg, images, digest, extractor, weights.tag, LAYER, batch_size, accelerator)
    return {name: frechet_distance(image_features(extractor, fake, batch_size, accelerator)[LAYER], real)
            for name, fake in variants.items()}  # fmt: skip


def main() -> None:
    parser = ArgumentParser(prog="python -m bench.gap", description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--num-samples", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0, help="the evaluator's noise seed (evaluate.py --seed)")
    parser.add_argument("--faint", type=int, default=10, help="grey levels below this count as faint background")
    args = parser.parse_args()
    if not 2 <= args.num_samples <= MAX_SAMPLES:
        raise GanError(f"--num-samples must be in [2, {MAX_SAMPLES}] (FID needs two; all are held in memory), "
                       f"got {args.num_samples}")  # fmt: skip
    if not 1 <= args.faint <= 255:
        raise GanError(f"--faint must be a grey level in [1, 255], got {args.faint}")
    check_seed(args.seed)
    G, cfg, found = ckpt.load_generator(args.run, torch.device("cpu"))
    if (cfg.data.channels, cfg.data.resolution) != (1, 28):
        raise GanError(f"{args.run}: bench.gap reads 28 px grey digits, this run has data.resolution="
                       f"{cfg.data.resolution}, data.channels={cfg.data.channels}")  # fmt: skip
    num_classes = int(getattr(G, "num_classes", 0))
    z, c = sample_latents(args.num_samples, G.z_dim, args.seed, num_classes, "random", G.class_counts)
    fake = generate_images(G, z, c)
    print(f"{found.path} (step {found.step}): {args.num_samples} images, seed {args.seed}")

    data = build_data(cfg)  # the run's training images, as the evaluator reads them
    real = as_tensor(data.images)
    if num_classes and not cfg.data.pseudo_labels:
        mask = held_out(data.labels)
        real_acc = float((classified(real[mask]) == data.labels[mask]).float().mean())
        hits = classified(fake) == c
        per_class = " ".join(f"{k}:{float(hits[c == k].float().mean()):.3f}" for k in c.unique().tolist())
        print(f"class adherence {float(hits.float().mean()):.4f} (per class {per_class}); the classifier's "
              f"accuracy on its {int(mask.sum())} held-out real digits {real_acc:.4f}")  # fmt: skip

    print("grey levels  " + "  ".join(f"[{lo},{hi})" for lo, hi in zip(BANDS[:-1], BANDS[1:], strict=True)))
    for name, images in (("real", real), ("generated", fake)):
        print(f"{name:>11}  " + "  ".join(f"{share:.4f}" for share in bands(images)))

    cleaned = fake.clone()
    cleaned[cleaned < args.faint] = 0
    scores = fids(cfg, data.images, data.digest, {"as drawn": fake, f"levels below {args.faint} set to 0": cleaned})
    for name, value in scores.items():
        print(f"FID {name}: {value:.3f}")


if __name__ == "__main__":
    try:
        main()
    except GanError as err:
        raise SystemExit(f"error: {err}") from None

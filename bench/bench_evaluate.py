"""The evaluator's cost per checkpoint against torch-fidelity's raw feature extraction, side by side.

python -m bench.bench_evaluate [--num-samples N] [--num-real R] [--batch-size B] [--repeats K]

- Per checkpoint: the evaluator's whole work for one checkpoint (load G, generate N images,
  extract their features, compute FID and KID, append to metrics.jsonl) against torch-fidelity's
  `get_featuresdict_from_dataset` on the same N images, already generated. Target: overhead < 10%.
  FID's 2048 x 2048 eigendecomposition is a fixed cost per checkpoint, independent of N, so the
  overhead is also shown without it and projected to the default --num-samples 10000.
- The real-data statistics cache: computing the statistics of R real images against loading them
  (what every evaluation call after the first one saves).

A tiny DCGAN run is trained first (a few seconds). Runs alternate (ours, raw, ours, ...) and the
best of K is kept for each, so drift on a busy machine hits both alike. Offline Inception weights
are used unless GAN_INCEPTION_WEIGHTS or the torch hub cache provide torch-fidelity's own.
"""

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_NUM_SAMPLES = 10000  # evaluate.py's default


def tiny_run(run_dir: Path) -> Path:
    from gan.config import load_config
    from gan.train_loop import train

    overrides = ["train.steps=20", "train.batch_size=16", "train.checkpoint_every=20", "data.limit=512",
                 "model.g_channels=16", "model.d_channels=16", "wandb.mode=disabled"]  # fmt: skip
    train(load_config(ROOT / "configs" / "dcgan_mnist.yaml", overrides), run_dir)
    return run_dir / "checkpoints" / "step-0000020"


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("--num-samples", type=int, default=200)
    parser.add_argument("--num-real", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())))

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["GAN_CACHE_DIR"] = str(Path(tmp) / "cache")  # private: the bench deletes cache files
        run_dir = Path(tmp) / "run"
        ckpt_path = tiny_run(run_dir)
        bench(run_dir, ckpt_path, args)


def bench(run_dir: Path, ckpt_path: Path, args) -> None:
    report(measure(run_dir, ckpt_path, args), args)


def measure(run_dir: Path, ckpt_path: Path, args) -> dict:
    """Seconds of each measurement (lists: one per alternated repeat), the evaluator's against raw extraction."""
    from accelerate import Accelerator
    from torch_fidelity.utils import get_featuresdict_from_dataset

    from gan.checkpoint import load_generator
    from gan.evaluation.features import create_extractor
    from gan.evaluation.metrics import compute_metrics
    from gan.evaluation.real_stats import real_images, real_stats
    from gan.evaluation.runner import EvalOptions, Evaluator, resolve_settings, run_config
    from gan.samples import generate_images

    accelerator = Accelerator()
    opts = EvalOptions(run_dir=run_dir, metrics=("fid", "kid"), num_samples=args.num_samples,
                       num_real=args.num_real, batch_size=args.batch_size,
                       kid_subset_size=min(100, args.num_samples, args.num_real))  # fmt: skip
    cfg = run_config(opts, accelerator.print)
    settings, weights, layers = resolve_settings(accelerator, opts, cfg)
    layer = layers["fid"]

    # ---- real-data statistics: computed once (the private cache starts empty), then loaded
    images, digest = real_images(cfg, args.num_real)
    extractor = create_extractor(weights, sorted(set(layers.values())), accelerator.device)

    def statistics():
        return real_stats(cfg, images, digest, extractor, weights.tag, layer, args.batch_size, accelerator)

    miss, real = timed(statistics)
    assert not real.from_cache
    hit = [timed(statistics)[0] for _ in range(3)]
    assert statistics().from_cache

    # ---- per checkpoint: the evaluator against torch-fidelity's raw extraction of the same images
    evaluator = Evaluator(accelerator, opts, cfg, settings, weights, layers)
    evaluator.prepare()  # its extractor, and the real statistics from the cache, as on a first checkpoint
    G, _, _ = load_generator(ckpt_path)
    gen = torch.Generator().manual_seed(opts.seed)
    z = torch.randn(args.num_samples, G.z_dim, generator=gen)
    fakes = generate_images(G, z, torch.zeros(len(z), dtype=torch.long), args.batch_size)
    dataset = Images(fakes.expand(-1, 3, -1, -1).contiguous())
    ours, raw = [], []
    for _ in range(args.repeats):
        ours.append(timed(lambda: evaluator.report(evaluator.evaluate(20, ckpt_path)))[0])
        seconds, fake = timed(lambda: get_featuresdict_from_dataset(dataset, extractor, args.batch_size,
                                                                     False, True, False))  # fmt: skip
        raw.append(seconds)
    metric_s = min(timed(lambda: compute_metrics(fake, real, settings, layers))[0] for _ in range(2))
    return {"device": str(accelerator.device), "threads": torch.get_num_threads(), "weights": weights.tag,
            "num_samples": args.num_samples, "num_real": args.num_real, "batch_size": args.batch_size,
            "evaluator_s": ours, "raw_s": raw, "metrics_s": metric_s, "real_miss_s": miss, "real_hit_s": hit}  # fmt: skip


def report(r: dict, args) -> None:
    ours, raw, hit, miss = r["evaluator_s"], r["raw_s"], r["real_hit_s"], r["real_miss_s"]
    best_ours, best_raw, per_image = min(ours), min(raw), min(raw) / args.num_samples
    fixed = r["metrics_s"]  # FID's eigendecomposition and KID: independent of N
    projected = (best_ours - fixed) / best_raw * DEFAULT_NUM_SAMPLES * per_image + fixed
    print(f"device: {r['device']}, torch threads: {r['threads']}, weights: {r['weights']}")
    print(f"per checkpoint, N={args.num_samples} generated images (best of {args.repeats}):")
    print(f"  evaluator (load G, generate, extract, FID+KID, metrics.jsonl): {best_ours:.2f} s  {fmt(ours)}")
    print(f"  torch-fidelity raw feature extraction of the same images:     {best_raw:.2f} s  {fmt(raw)}")
    print(f"  FID+KID from the features alone:                              {fixed:.2f} s")
    print(f"  ratio evaluator / raw: {best_ours / best_raw:.3f}  (overhead {100 * (best_ours / best_raw - 1):.1f}%)")
    print(f"  without the fixed FID+KID cost: {(best_ours - fixed) / best_raw:.3f}  "
          f"(overhead {100 * ((best_ours - fixed) / best_raw - 1):.1f}%)")  # fmt: skip
    raw_projected = DEFAULT_NUM_SAMPLES * per_image
    print(f"  projected to N={DEFAULT_NUM_SAMPLES}: {projected / raw_projected:.3f}  "
          f"(overhead {100 * (projected / raw_projected - 1):.1f}%)")  # fmt: skip
    print(f"real-data statistics, R={args.num_real} images:")
    print(f"  computed (cache miss): {miss:.2f} s; loaded (cache hit, best of 3): {min(hit):.3f} s  {fmt(hit)}")
    print(f"  the cache saves {miss - min(hit):.2f} s per evaluation call ({miss / min(hit):.0f}x)")


class Images(torch.utils.data.Dataset):
    """uint8 (N, 3, H, W) as the map-style data set torch-fidelity takes."""

    def __init__(self, images: torch.Tensor):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i]


def fmt(values) -> str:
    return "[" + ", ".join(f"{v:.2f}" for v in values) + "]"


if __name__ == "__main__":
    main()

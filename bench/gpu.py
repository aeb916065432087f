"""GPU benchmark: training throughput, MFU and memory per precision and compile setting; the
evaluator's Inception throughput and the FID drift TF32 brings. One script, for a short GPU lease.

python -m bench.gpu [--out bench/gpu_results.json] [--budget-s 400] [--batches 64,256] [--quick]
python -m bench.gpu --compiled dcgan_cifar10:64:bf16:default,...   # compiled cells only (MODE: a torch.compile mode)
python -m bench.gpu --readme   # rewrite docs/performance.md's GPU tables from the results file
python -m bench.gpu --step --before DIR   # the step study, before and after the one-call step (bench/gpu_step.py)

Sections, in the order they run (results are written after every measurement, so a run cut short
keeps what it measured; the compile cells come last and stop at the budget):
- peak: 8192^3 matmuls in bf16, fp16, TF32 and strict fp32, the MFU denominators of this card.
- train: our loop (gan.train_loop.train in this process, W&B off) for dcgan_cifar10 and
  sngan_cifar10 at batch 64 and 256, in fp32 with TF32, bf16 and fp16 (Accelerate's mixed
  precision), torch.compile off, then on (Accelerate's dynamo setting). The data set sits on the
  GPU (data.on_device). CIFAR-10 cannot be downloaded there: the presets train on the embedded
  digits at 32 px RGB, which costs the same per step. FLOPs per image are counted on our real step.
- minimal: the minimal hand-written loop (bench/reference_loops.py) on the same GPU for
  dcgan_cifar10, fp32-TF32 and bf16, batch 64 and 256: our loop's overhead as a ratio.
- evaluator: Inception features of 5,000 real digits and 5,000 images of a G trained here, strict
  fp32 against TF32: img/s, FID and KID, and the relative FID drift (TF32 is kept only under 1e-4).
"""

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench.flops import count_step_flops
from bench.reference_loops import Variant
from bench.training import ROOT, minimal, ours, preset_config

PRESETS = {"dcgan_cifar10": (400, 100), "sngan_cifar10": (80, 20)}  # G steps, log window (first = warm-up)
BATCHES = (64, 256)
PRECISIONS = ("fp32-tf32", "bf16", "fp16")
DRIFT_LIMIT = 1e-4  # relative FID drift under which TF32 would be kept for Inception
INCEPTION_BATCH = 250  # images per Inception batch in the evaluator section
# the card's dense tensor-core peaks from its datasheet, FLOP/s (H100 SXM and H200 share them)
DATASHEET = {"bf16": 989.4e12, "fp16": 989.4e12, "fp32-tf32": 494.7e12}


DEVICE = "cuda" if torch.cuda.is_available() else "cpu"  # cpu: only `--quick`, to check the script


def sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Results:
    def __init__(self, path: Path):
        self.path = path
        name = torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu (script check only)"
        self.data = {"device": name, "torch": torch.__version__, "peak": {}, "train": [],
                     "minimal": [], "evaluator": {}, "fp16_scaler": None, "notes": []}  # fmt: skip

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.data, indent=1) + "\n")


def matmul_peaks(n: int = 8192, repeats: int = 10) -> dict:
    peaks = {}
    for name, dtype, tf32 in (("bf16", torch.bfloat16, False), ("fp16", torch.float16, False),
                              ("fp32-tf32", torch.float32, True), ("fp32", torch.float32, False)):  # fmt: skip
        torch.backends.cuda.matmul.allow_tf32 = tf32
        a, b = torch.randn(n, n, device=DEVICE, dtype=dtype), torch.randn(n, n, device=DEVICE, dtype=dtype)
        for _ in range(3):
            a @ b
        sync()
        start = time.perf_counter()
        for _ in range(repeats):
            a @ b
        sync()
        peaks[name] = 2 * n**3 * repeats / (time.perf_counter() - start)
    torch.backends.cuda.matmul.allow_tf32 = True
    return peaks


def accelerate_env(precision: str, compiled: bool, mode: str = "default") -> dict:
    return {"ACCELERATE_MIXED_PRECISION": "no" if precision == "fp32-tf32" else precision,
            "ACCELERATE_DYNAMO_BACKEND": "inductor" if compiled else "no", "ACCELERATE_DYNAMO_MODE": mode}  # fmt: skip


def train_cell(preset: str, batch: int, precision: str, compiled: bool, flops: dict, peaks: dict, quick: bool,
               mode: str = "default") -> dict:  # fmt: skip
    steps, window = PRESETS[preset]
    if quick:
        steps, window = 8, 2
    if DEVICE == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    result = ours(preset, steps, window, env=accelerate_env(precision, compiled, mode),
                  overrides=(f"train.batch_size={batch}", "train.tf32=true"))  # fmt: skip
    cell = {"preset": preset, "batch": batch, "precision": precision, "compile": compiled, "mode": mode,
            "wall_s": time.perf_counter() - start, "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30 if DEVICE == "cuda" else 0.0,
            **result}  # fmt: skip
    if "steady_img_per_s" in result:
        achieved = flops["per_image"] * result["steady_img_per_s"]
        cell |= {"flop_per_s": achieved, "mfu_measured_peak": achieved / peaks[precision],
                 "mfu_datasheet": achieved / DATASHEET[precision]}  # fmt: skip
    return cell


def minimal_cell(batch: int, precision: str, quick: bool) -> dict:
    steps, window = (8, 2) if quick else PRESETS["dcgan_cifar10"]
    variant = Variant(device=DEVICE, bf16=precision == "bf16")
    result = minimal("dcgan_cifar10", steps, window, variant, overrides=(f"train.batch_size={batch}",))
    return {"preset": "dcgan_cifar10", "batch": batch, "precision": precision, **result}


def evaluator_section(num: int, quick: bool) -> dict:
    """Strict fp32 against TF32 Inception on the same real and generated images."""
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_features_to_statistics, fid_statistics_to_metric
    from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, kid_features_to_metric

    from gan.checkpoint import load_generator
    from gan.data import as_tensor, build_data
    from gan.evaluation.features import create_extractor
    from gan.evaluation.inception import resolve_weights
    from gan.train_loop import train

    with tempfile.TemporaryDirectory() as tmp:
        cfg = preset_config("dcgan_mnist", f"train.steps={50 if quick else 1500}", "wandb.mode=disabled")
        t0 = time.perf_counter()
        assert train(cfg, Path(tmp) / "run") == 0
        train_s = time.perf_counter() - t0
        G, _, _ = load_generator(Path(tmp) / "run", DEVICE)
    weights = resolve_weights(None)
    extractor = create_extractor(weights, ["2048"], DEVICE)
    real = as_tensor(build_data(cfg).images[:num])
    z = torch.randn(num, G.z_dim, generator=torch.Generator().manual_seed(0))
    labels = torch.zeros(num, dtype=torch.long)
    out = {"num_real": len(real), "num_generated": num, "weights": weights.tag, "g_train_s": train_s,
           "g_steps": cfg.train.steps}  # fmt: skip
    for tf32 in (False, True, False):  # strict fp32 twice: the first pass also warms cuDNN up
        sync()
        start = time.perf_counter()
        real_f = inception_features(extractor, image_batches(real), tf32)
        fake_f = inception_features(extractor, generated_batches(G, z, labels), tf32)
        seconds = time.perf_counter() - start
        fid = fid_statistics_to_metric(fid_features_to_statistics(fake_f), fid_features_to_statistics(real_f),
                                       verbose=False)[KEY_METRIC_FID]  # fmt: skip
        kid = kid_features_to_metric(fake_f, real_f, kid_subsets=100, kid_subset_size=min(1000, num), rng_seed=0,
                                     verbose=False)[KEY_METRIC_KID_MEAN]  # fmt: skip
        out["tf32" if tf32 else "fp32"] = {"img_per_s": (len(real) + num) / seconds, "fid": float(fid),
                                           "kid": float(kid), "features": (real_f, fake_f)}  # fmt: skip
    fp32, tf32 = out["fp32"], out["tf32"]
    pairs = zip(fp32["features"], tf32["features"], strict=True)
    out["feature_max_abs_diff"] = float(max((a - b).abs().max() for a, b in pairs))
    out["fid_relative_drift"] = abs(tf32["fid"] - fp32["fid"]) / fp32["fid"]
    out["kid_relative_drift"] = abs(tf32["kid"] - fp32["kid"]) / abs(fp32["kid"])
    out["tf32_speedup"] = tf32["img_per_s"] / fp32["img_per_s"]
    out["keep_tf32"] = out["fid_relative_drift"] < DRIFT_LIMIT
    for key in ("fp32", "tf32"):
        out[key].pop("features")
    return out


def image_batches(images: torch.Tensor):
    for i in range(0, len(images), INCEPTION_BATCH):
        yield images[i : i + INCEPTION_BATCH].to(DEVICE)


def generated_batches(G, z: torch.Tensor, labels: torch.Tensor):
    """G's images quantised to uint8, as the evaluator feeds them to Inception."""
    from gan.data import to_uint8

    for i in range(0, len(z), INCEPTION_BATCH):
        yield to_uint8(G(z[i : i + INCEPTION_BATCH].to(DEVICE), labels[i : i + INCEPTION_BATCH].to(DEVICE)))


@torch.no_grad()
def inception_features(extractor, batches, tf32: bool) -> torch.Tensor:
    """The 2048-d features of uint8 image batches, extracted as gan.evaluation.features does per
    batch, with PyTorch's TF32 switches set to `tf32` meanwhile (then restored)."""
    from gan.evaluation.features import extract
    from gan.train_loop import set_tf32

    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    set_tf32(tf32)
    try:
        return torch.cat([extract(extractor, batch)["2048"] for batch in batches])
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="the results file (bench/gpu_results.json; --step: gpu_step_results.json)")
    parser.add_argument("--budget-s", type=float, default=400.0, help="start no compile cell after this")
    parser.add_argument("--quick", action="store_true", help="a few steps per cell: checks the script")
    parser.add_argument("--batches", default=",".join(map(str, BATCHES)), help="comma-separated batch sizes")
    parser.add_argument("--compiled", help="only these compiled cells, in order: PRESET:BATCH:PRECISION:MODE,...")
    parser.add_argument("--readme", action="store_true", help="rewrite docs/performance.md's GPU tables from --out")
    parser.add_argument("--step", action="store_true", help="only the step study (bench/gpu_step.py)")
    parser.add_argument("--before", type=Path, help="--step: the tree of the commit before the one-call step")
    parser.add_argument("--cells", help="--step: only these cells, CODE:PRESET:BATCH:PRECISION:MODE[:profile],...")
    args = parser.parse_args()
    if args.readme:
        from bench.readme_gpu import update_gpu_section

        update_gpu_section(json.loads((args.out or ROOT / "bench" / "gpu_results.json").read_text()))
        return
    if DEVICE != "cuda" and not args.quick:
        raise SystemExit("error: python -m bench.gpu needs a CUDA GPU (on a CPU, --quick only checks the script)")
    os.environ.setdefault("WANDB_MODE", "disabled")
    if args.step:
        from bench.gpu_step import run_study

        if args.before is None:
            raise SystemExit("error: --step needs --before DIR, the code of the commit before the one-call step")
        peaks = matmul_peaks(8192 if DEVICE == "cuda" else 256)
        flops = {p: count_step_flops(preset_config(p)) for p in PRESETS}
        run_study(args.out or ROOT / "bench" / "gpu_step_results.json", args.before, args.budget_s, args.quick,
                  peaks, flops, log, args.cells)  # fmt: skip
        return
    args.out = args.out or ROOT / "bench" / "gpu_results.json"
    start = time.perf_counter()
    res = Results(args.out)
    res.data["peak"] = peaks = matmul_peaks(8192 if DEVICE == "cuda" else 256)
    log("peak TFLOP/s: " + ", ".join(f"{k} {v / 1e12:.0f}" for k, v in peaks.items()))
    res.save()

    flops = {p: count_step_flops(preset_config(p)) for p in PRESETS}
    res.data["flops"] = flops
    if args.compiled:  # a second lease: compiled cells only
        for spec in args.compiled.split(","):
            if time.perf_counter() - start > args.budget_s:
                res.data["notes"].append(f"time budget spent: {spec} not run")
                continue
            preset, batch, precision, mode = spec.split(":")
            cell = train_cell(preset, int(batch), precision, True, flops[preset], peaks, args.quick, mode)
            res.data["train"].append(cell)
            res.save()
            log(f"{spec}: {cell.get('steady_img_per_s', float('nan')):.0f} img/s, {cell['wall_s']:.0f} s "
                f"{cell.get('error', '')}")  # fmt: skip
        return

    batches = [int(b) for b in args.batches.split(",")]

    def run_train(compiled: bool) -> None:
        cells = [(p, b, x) for p in PRESETS for b in batches for x in PRECISIONS]
        if compiled:  # each cell compiles afresh, so the budget runs out: the largest batch and bf16 first
            cells.sort(key=lambda c: (c[0] != "dcgan_cifar10", -c[1], PRECISIONS.index(c[2]) != 1))
        for preset, batch, precision in cells:
            if precision == "fp16" and DEVICE == "cpu":
                continue  # Accelerate's fp16 needs a GPU
            if compiled and time.perf_counter() - start > args.budget_s:
                res.data["notes"].append(f"time budget spent: {preset} b{batch} {precision} compiled not run")
                continue
            cell = train_cell(preset, batch, precision, compiled, flops[preset], peaks, args.quick)
            res.data["train"].append(cell)
            res.save()
            log(f"{preset} b{batch} {precision} compile={compiled}: "
                f"{cell.get('steady_img_per_s', float('nan')):.0f} img/s, "
                f"MFU {cell.get('mfu_measured_peak', float('nan')):.1%}, {cell['peak_mem_gib']:.2f} GiB, "
                f"{cell['wall_s']:.0f} s {cell.get('error', '')}")  # fmt: skip

    run_train(compiled=False)
    for batch in batches:
        for precision in ("fp32-tf32", "bf16"):
            res.data["minimal"].append(cell := minimal_cell(batch, precision, args.quick))
            res.save()
            log(f"minimal b{batch} {precision}: {cell.get('steady_img_per_s', float('nan')):.0f} img/s")
    res.data["evaluator"] = ev = evaluator_section(5000 if DEVICE == "cuda" else 8, args.quick)
    res.save()
    log(f"evaluator: fp32 {ev['fp32']['img_per_s']:.0f} img/s FID {ev['fp32']['fid']:.6f}; "
        f"tf32 {ev['tf32']['img_per_s']:.0f} img/s FID {ev['tf32']['fid']:.6f}; drift {ev['fid_relative_drift']:.2e}")
    run_train(compiled=True)
    res.data["total_s"] = time.perf_counter() - start
    res.save()
    log(f"done in {res.data['total_s']:.0f} s")


if __name__ == "__main__":
    main()

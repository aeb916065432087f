"""The benchmark harness: training, FLOPs, MFU, evaluator and memory, every figure a ratio from one run.

python -m bench.run [--quick] [--ddp N] [--presets a,b] [--sections presets,study,evaluator]
python -m bench.run --readme          # rewrite docs/performance.md's CPU tables from bench/results.json

Sections, each measured side by side (candidates alternated A, B, A, B; best of the rounds):
- presets: every preset in configs/ in our loop (gan.train_loop.train, in-process, W&B disabled)
  against a minimal hand-written loop with the same networks, batch and step (and, for
  vanilla_mnist, the guide's original loop); FLOPs per image counted on our real step; MFU
  against a large fp32 matmul timed in the same run; peak RSS per measurement. CIFAR-10 presets
  run on the embedded digits at 32 px RGB (no download here).
- study: the CPU optimisations (channels_last, torch.compile, bf16 autocast, foreach/fused Adam,
  zero_grad, .item(), DataLoader, threads) one at a time in the minimal loop on the vanilla and
  DCGAN networks, the winners together, bf16 / compile in our loop through Accelerate, and the
  changes of bench/proposals.py (Adam's implementation, gradient norms every step, channels_last)
  in our step assembled from the package's pieces.
- evaluator: bench/bench_evaluate.py's measurement (the evaluator against torch-fidelity's raw
  Inception feature extraction of the same images).
- --ddp N: `accelerate launch` with N CPU processes (gloo) against 1 process, same per-process batch.

--quick shortens every run, skips the study and the presets whose G step takes seconds.
"""

import argparse
import datetime
import os
import sys
import tempfile
from argparse import Namespace
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import asdict, replace
from io import StringIO
from pathlib import Path

import torch

from bench import ddp
from bench.flops import PeakMeter, count_step_flops
from bench.measure import PeakRSS, alternate, best, machine
from bench.proposals import Proposal
from bench.readme import PERFORMANCE_PAGE, render, update_section
from bench.reference_loops import StepSpec, Variant
from bench.training import CIFAR_STAND_IN, ROOT, assembled, guide, minimal, ours, plan, preset_config

RESULTS = ROOT / "bench" / "results.json"
GUIDE_PRESET = "vanilla_mnist"  # the guide's networks and batch
STUDY_PRESETS = ("vanilla_mnist", "dcgan_mnist")
DDP_PRESET = "dcgan_mnist"
HEAVY_S = 3.0  # estimated seconds per G step above which a preset runs one round (skipped by --quick)
# seconds per run and alternated rounds: many short runs, so that some run while the machine is quiet
PRESET_RUN = {"quick": (2.0, 2), "full": (4.0, 3)}
STUDY_RUN = (2.0, 4)
WIN = 1.03  # a variant "wins" when it is this much faster than the baseline: more than a shared CPU's noise
SECTIONS = ("presets", "study", "evaluator")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def warm_imports() -> None:
    """Import what the measured code imports, so that no measurement pays for it."""
    import torch_fidelity  # noqa: F401
    import torchvision.transforms  # noqa: F401
    import wandb  # noqa: F401

    import gan.train_loop  # noqa: F401


# --------------------------------------------------------------------------- sections


def bench_presets(presets: list[str], flops: dict, peak: PeakMeter, quick: bool) -> dict:
    out = {}
    for preset in presets:
        cfg = preset_config(preset)
        target_s, rounds = PRESET_RUN["quick" if quick else "full"]
        p = plan(flops[preset]["per_g_step"], cfg.train.n_critic, peak.fp32, target_s, rounds, quick, HEAVY_S)
        data = "mnist5k as 32 px RGB (CIFAR-10 stand-in)" if preset_is_cifar(preset) else cfg.data.name
        entry = {"data": data, "plan": asdict(p), "flops": flops[preset], "n_critic": cfg.train.n_critic}
        out[preset] = entry
        if p.skip:
            entry["skipped"] = p.skip
            log(f"  {preset}: {p.skip}")
            continue
        log(f"  {preset}: {p.steps} G steps x {p.repeats} rounds (~{p.est_step_s:.2f} s per step estimated)")
        candidates = {"ours": lambda preset=preset, p=p: ours(preset, p.steps, p.log_every)}
        reason = StepSpec.unsupported(cfg)
        if reason is None:
            candidates["minimal"] = lambda preset=preset, p=p: minimal(preset, p.steps, p.log_every)
        else:
            entry["minimal_na"] = reason
        if preset == GUIDE_PRESET:
            candidates["guide"] = lambda p=p: guide(p.steps, p.log_every)
        runs = alternate(candidates, p.repeats, log, peak.sample)
        entry["runs"] = {name: best(r) for name, r in runs.items()}
    return out


def preset_is_cifar(preset: str) -> bool:
    from gan.config import load_config

    return load_config(ROOT / "configs" / f"{preset}.yaml").data.name == "cifar10"


def study_variants(conv: bool, cores: int) -> dict[str, Variant]:
    threads = torch.get_num_threads()
    other = 1 if threads > 1 else cores
    variants = {
        "baseline": Variant(),
        "channels_last": Variant(channels_last=True),
        "bf16 autocast": Variant(bf16=True),
        "torch.compile": Variant(compile=True),
        "Adam foreach": Variant(adam="foreach"),
        "Adam fused": Variant(adam="fused"),
        "zero_grad(set_to_none=False)": Variant(set_to_none=False),
        ".item() on both losses every step": Variant(item_sync=True),
        "batches through our DataLoader": Variant(dataloader=True),
        f"{other} thread(s) instead of {threads}": Variant(threads=other),
    }
    if not conv:
        del variants["channels_last"]
    if other == threads:
        del variants[f"{other} thread(s) instead of {threads}"]
    return variants


COMBINABLE = ("channels_last", "compile", "bf16", "adam")  # optimisations one would switch on together


def combinable(variant: Variant) -> bool:
    return any(getattr(variant, f) != getattr(Variant(), f) for f in COMBINABLE)


def combine(winners: list[Variant]) -> Variant:
    merged = Variant()
    for variant in winners:
        merged = replace(merged, **{f: getattr(variant, f) for f in COMBINABLE if getattr(variant, f) != getattr(Variant(), f)})
    return merged


def bench_study(flops: dict, peak: PeakMeter, cores: int) -> dict:
    return {preset: study(preset, flops[preset], peak, cores) for preset in STUDY_PRESETS}


def study(preset: str, flops: dict, peak: PeakMeter, cores: int) -> dict:
    cfg = preset_config(preset)
    p = plan(flops["per_g_step"], cfg.train.n_critic, peak.fp32, *STUDY_RUN, False)
    warmup = max(3, p.log_every)  # torch.compile compiles in the first D and G steps
    p = replace(p, steps=max(p.steps, 4 * warmup))  # three timed windows after the warm-up
    variants = study_variants(cfg.model.network != "mlp", cores)
    log(f"  study {preset}: {p.steps} G steps ({warmup} warm-up) x {p.repeats} rounds, {len(variants)} variants")
    # an oversubscribed thread count runs many times slower: one window after the warm-up shows it
    steps = {name: (2 * warmup if v.threads else p.steps) for name, v in variants.items()}
    candidates = {name: (lambda v=v, n=steps[name]: minimal(preset, n, warmup, v)) for name, v in variants.items()}
    runs = alternate(candidates, p.repeats, log, peak.sample)
    entry = {"steps": p.steps, "warmup": warmup, "repeats": p.repeats,
             "minimal": {name: best(r) for name, r in runs.items()},
             # the first round compiles with an empty inductor cache (bench/run.py starts one)
             "compile_cold_warmup_s": runs["torch.compile"][0].get("warmup_s"),
             "baseline_rounds": [r.get("best_window_img_per_s") for r in runs["baseline"]]}  # fmt: skip

    # keep what wins: the optimisations faster than the baseline, switched on together
    base = entry["minimal"]["baseline"]["best_window_img_per_s"]
    entry["winners"] = [name for name, v in variants.items() if combinable(v)
                        and (entry["minimal"][name].get("best_window_img_per_s") or 0) > WIN * base]  # fmt: skip
    if len(entry["winners"]) > 1:
        together = combine([variants[w] for w in entry["winners"]])
        pair = {"baseline": lambda: minimal(preset, p.steps, warmup),
                " + ".join(entry["winners"]): lambda: minimal(preset, p.steps, warmup, together)}  # fmt: skip
        entry["combined"] = {name: best(r) for name, r in alternate(pair, p.repeats, log, peak.sample).items()}

    # our loop with Accelerate's own settings (log windows: the first one holds the compilation)
    log_every = warmup
    steps = 4 * log_every
    settings = {
        "ours": None,  # fused Adam, gradient norms at the log steps
        "ours + ACCELERATE_MIXED_PRECISION=bf16": {"ACCELERATE_MIXED_PRECISION": "bf16"},
        "ours + ACCELERATE_DYNAMO_BACKEND=inductor": {"ACCELERATE_DYNAMO_BACKEND": "inductor"},
    }
    candidates = {name: (lambda env=env: ours(preset, steps, log_every, env)) for name, env in settings.items()}
    entry["ours"] = {name: best(r) for name, r in alternate(candidates, p.repeats, log, peak.sample).items()}

    # changes the package has no switch for, in our step assembled from its pieces (the first row)
    changes = {
        "our step, assembled by bench/proposals.py": Proposal(),
        "our step with torch's default Adam (not fused)": Proposal(adam="default"),
        "our step with Adam(foreach=True) (not fused)": Proposal(adam="foreach"),
        "our step + gradient norms every step": Proposal(grad_norms_every_step=True),
        "our step + channels_last networks": Proposal(channels_last=True),
    }
    if cfg.model.network == "mlp":
        del changes["our step + channels_last networks"]
    candidates = {name: (lambda c=c: assembled(preset, steps, log_every, c)) for name, c in changes.items()}
    runs = alternate(candidates, p.repeats, log, peak.sample)
    entry["proposals"] = {name: best(r) for name, r in runs.items()}
    return entry


def bench_evaluator(quick: bool) -> dict:
    from bench.bench_evaluate import measure, tiny_run

    n = 20 if quick else 100
    args = Namespace(num_samples=n, num_real=n, batch_size=min(50, n), repeats=2)
    saved = os.environ.get("GAN_CACHE_DIR")
    output = StringIO()
    with tempfile.TemporaryDirectory() as tmp, redirect_stdout(output), redirect_stderr(output):
        os.environ["GAN_CACHE_DIR"] = str(Path(tmp) / "cache")  # private and empty: the first call is a miss
        try:
            ckpt = tiny_run(Path(tmp) / "run")
            with PeakRSS() as mem:
                result = measure(Path(tmp) / "run", ckpt, args)
        finally:
            os.environ.pop("GAN_CACHE_DIR") if saved is None else os.environ.update(GAN_CACHE_DIR=saved)
    return result | {"peak_rss_mib": round(mem.peak_mib)}


def bench_ddp(processes: int, flops: dict, peak: PeakMeter, quick: bool, cores: int) -> dict:
    cfg = preset_config(DDP_PRESET)
    p = plan(flops[DDP_PRESET]["per_g_step"], cfg.train.n_critic, peak.fp32, 4 if quick else 5, 1 if quick else 2, quick)
    steps = max(8, p.steps)
    configs = ddp.configurations(processes, cores)
    log(f"  ddp {DDP_PRESET}: {steps} G steps x {p.repeats} rounds: {', '.join(configs)}")
    candidates = {name: (lambda c=c: ddp.launch(DDP_PRESET, *c, steps, steps // 4))
                  for name, c in configs.items()}  # fmt: skip
    runs = {name: best(r) for name, r in alternate(candidates, p.repeats, log, peak.sample).items()}
    return {"preset": DDP_PRESET, "batch_size": cfg.train.batch_size, "steps": steps, "repeats": p.repeats,
            "runs": runs}  # fmt: skip


# --------------------------------------------------------------------------- main


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs; no study, no multi-second presets")
    parser.add_argument("--ddp", type=int, default=0, metavar="N", help="also measure N CPU processes against 1")
    parser.add_argument("--presets", help="comma-separated preset names (default: every file in configs/)")
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"any of {', '.join(SECTIONS)}")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where to write the results (JSON)")
    parser.add_argument("--readme", action="store_true", help="only rewrite docs/performance.md's CPU tables from --out")
    args = parser.parse_args(argv)
    args.sections = [s for s in args.sections.split(",") if s]
    unknown = set(args.sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; choose from {', '.join(SECTIONS)}")
    known = sorted(p.stem for p in (ROOT / "configs").glob("*.yaml"))
    args.presets = args.presets.split(",") if args.presets else known
    if set(args.presets) - set(known):
        parser.error(f"unknown presets {sorted(set(args.presets) - set(known))}; choose from {', '.join(known)}")
    return args


def main(argv=None) -> None:
    import json

    args = parse_args(argv)
    if args.readme:
        update_section(PERFORMANCE_PAGE, render(json.loads(args.out.read_text())))
        log(f"{PERFORMANCE_PAGE.relative_to(ROOT)}: CPU tables rewritten from {args.out}")
        return
    os.environ.update(WANDB_MODE="disabled", WANDB_SILENT="true", TQDM_DISABLE="1")
    # torch.compile's first warm-up is measured with an empty cache, not one left by earlier runs
    inductor_cache = tempfile.TemporaryDirectory(prefix="bench-inductor-")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = inductor_cache.name
    warm_imports()
    info = machine()
    cores = info["cores"]
    log(f"{info['cpu']}, {cores} cores, torch {info['torch']}, {info['torch_threads']} threads")
    results = {"date": datetime.date.today().isoformat(), "quick": args.quick, "machine": info,
               "cifar_stand_in": CIFAR_STAND_IN, "win": WIN}  # fmt: skip
    peak = PeakMeter()
    peak.sample(repeats=10)
    log(f"peak fp32 matmul: {peak.fp32 / 1e9:.1f} GFLOP/s so far; counting FLOPs")
    flops = {p: count_step_flops(preset_config(p)) for p in sorted({*args.presets, *STUDY_PRESETS, DDP_PRESET})}
    if "presets" in args.sections:
        results["presets"] = bench_presets(args.presets, flops, peak, args.quick)
    if "study" in args.sections and not args.quick:
        results["study"] = bench_study(flops, peak, cores)
    if "evaluator" in args.sections:
        log("  evaluator")
        peak.sample()
        results["evaluator"] = bench_evaluator(args.quick)
    if args.ddp:
        results["ddp"] = bench_ddp(args.ddp, flops, peak, args.quick, cores)
    peak.sample(repeats=10)
    results["peak"] = peak.summary()
    results["machine"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(render(results))
    log(f"wrote {args.out}")


if __name__ == "__main__":
    main()

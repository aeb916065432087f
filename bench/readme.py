"""bench/results.json as Markdown: the tables `python -m bench.run` prints and writes into docs/performance.md.

`python -m bench.run --readme` replaces the text between that page's `<!-- perf -->` and
`<!-- /perf -->` markers with `render(results)`; nothing else in the page changes. `python -m
bench.gpu --readme` writes its tables between the same page's `<!-- gpu -->` markers
(bench/readme_gpu.py).
"""

import re
from pathlib import Path

from gan.errors import GanError

PERFORMANCE_PAGE = Path(__file__).resolve().parents[1] / "docs" / "performance.md"
BEGIN, END = "<!-- perf -->", "<!-- /perf -->"
# preset -> (reference loop, the least ratio of our steady rate to the reference's that we accept)
TARGETS = {"dcgan_mnist": ("minimal", 0.95), "vanilla_mnist": ("guide", 1.3)}
REFERENCE_NAMES = {"minimal": "the minimal hand-written loop", "guide": "the guide's original loop"}


def fmt(value, digits: int = 0, suffix: str = "") -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}{suffix}"


def rate(value) -> str:
    """img/s with the digits that matter: 4,468 / 52.3 / 1.85."""
    if value is None:
        return "-"
    return fmt(value, 0 if value >= 100 else 1 if value >= 10 else 2)


def ratio(a, b) -> float | None:
    return a / b if a and b else None


def steady(run: dict | None) -> float | None:
    """The headline rate: the fastest window of steps after warm-up, over all rounds."""
    return run.get("best_window_img_per_s") if run and "error" not in run else None


def machine_lines(r: dict) -> list[str]:
    m, peak = r["machine"], r["peak"]
    bf16 = peak.get("bf16", {}).get("flop_per_s")  # not sampled on a CPU without bf16 instructions
    mode = "`python -m bench.run --quick`" if r["quick"] else "`python -m bench.run`"
    loads = f"{m['load_average_start']} at the start, {m.get('load_average_end', '-')} at the end"
    return [
        f"Measured by {mode} on {r['date']}: **{m['cpu']}**, {m['cores']} cores ({', '.join(m['simd'])}), "
        f"{m['memory_gib']} GiB; torch {m['torch']}, accelerate {m['accelerate']}, Python {m['python']}; "
        f"{m['torch_threads']} torch thread(s) (OMP_NUM_THREADS={m['omp_num_threads']}). Load average {loads}: "
        "the machine was shared with other jobs, so every figure is a ratio of runs alternated in the same "
        "run, each the best of its rounds.",
        "",
        f"Peak, measured in the same run: a {peak['fp32']['n']}² fp32 matmul, timed before every alternated round "
        f"({peak['fp32']['samples']} samples), at best **{fmt(peak['fp32']['flop_per_s'] / 1e9, 1)} GFLOP/s** "
        f"(median {fmt(peak['fp32']['median_flop_per_s'] / 1e9, 1)}); bf16: {fmt(bf16 and bf16 / 1e9, 1)}. "
        "MFU is the step's counted FLOPs (FlopCounterMode: matmuls and convolutions, forward and backward, "
        "n_critic D steps + 1 G step) times img/s, over the best fp32 sample.",
        "",
    ]


def cpu(run: dict | None) -> float | None:
    return run.get("best_window_cpu_img_per_s") if run and "error" not in run else None


def preset_rows(r: dict) -> list[str]:
    if not r.get("presets"):
        return []
    peak = r["peak"]["fp32"]["flop_per_s"]
    rows = [
        "| preset | G steps x rounds | ours img/s | reference img/s | ours / reference | by CPU time | end to end "
        "| MFLOP/img | GFLOP/s | MFU | peak RSS MiB, ours / ref |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    stand_ins = []
    for name, e in r.get("presets", {}).items():
        flops, plan = e["flops"]["per_image"], e["plan"]
        label = name + (" (1)" if "stand-in" in e["data"] else "")
        if "stand-in" in e["data"]:
            stand_ins.append(name)
        if e.get("skipped"):
            rows.append(f"| {label} | - | {e['skipped']} | | | | | {fmt(flops / 1e6, 1)} | | | |")
            continue
        ours = e["runs"]["ours"]
        achieved = steady(ours) * flops if steady(ours) else None
        mfu = achieved / peak if achieved else None
        mfu_cell = fmt(mfu and 100 * mfu, 1, "%") + (" (the peak sample was disturbed)" if mfu and mfu > 1 else "")
        flop_cells = f"{fmt(flops / 1e6, 1)} | {fmt(achieved and achieved / 1e9, 1)} | {mfu_cell}"
        for ref in ("minimal", "guide"):
            other = e["runs"].get(ref)
            if ref == "guide" and other is None:
                continue
            ref_cell = rate(steady(other)) if other else f"n/a: {e.get('minimal_na')}"
            end_to_end = ratio(ours.get("img_per_s"), other.get("img_per_s")) if other else None
            rows.append(
                f"| {label} vs {REFERENCE_NAMES[ref]} | {plan['steps']} x {plan['repeats']} | {rate(steady(ours))} "
                f"| {ref_cell} | **{fmt(ratio(steady(ours), steady(other)), 2, 'x')}** "
                f"| {fmt(ratio(cpu(ours), cpu(other)), 2, 'x')} | {fmt(end_to_end, 2, 'x')} | {flop_cells} "
                f"| {ours.get('peak_rss_mib', '-')} / {other.get('peak_rss_mib', '-') if other else '-'} |"
            )
    notes = [
        "",
        "img/s: images of the G steps' batches per second in the fastest window of steps after a first "
        "window of warm-up, over all alternated rounds (our loop: its log windows, `train.log_every` = a "
        "quarter of the run; the references: as many steps). *by CPU time*: the same per second of the "
        "process's CPU time, where both runs give it (-: our loop's train_log.jsonl holds wall time only). "
        "*end to end*: whole runs of the length shown, set-up, data loading, one "
        "checkpoint and one sample grid included. Peak RSS: the process's high-water mark during the run "
        "(torch and the libraries included; reset before each run).",
    ]
    if stand_ins:
        notes.append(f"(1) {', '.join(stand_ins)}: CIFAR-10 cannot be downloaded here; these rows train the same "
                     f"networks on the embedded digits as 32 px RGB ({' '.join(r['cifar_stand_in'])}).")  # fmt: skip
    return rows + notes + [""]


def target_lines(r: dict) -> list[str]:
    lines = []
    for preset, (ref, target) in TARGETS.items():
        runs = r.get("presets", {}).get(preset, {}).get("runs")
        if not runs or ref not in runs:
            continue
        value = ratio(steady(runs["ours"]), steady(runs[ref]))
        verdict = "met" if value and value >= target else "**not met**"
        lines.append(f"- {preset}: {fmt(value, 2, 'x')} {REFERENCE_NAMES[ref]} (target >= {target}x): {verdict}.")
    return (["Throughput targets (fastest windows, as in the table):", "", *lines, ""]) if lines else []


def study_rows(r: dict) -> list[str]:
    study = r.get("study")
    if not study:
        return []
    nets = list(study)
    header = "| variant | " + " | ".join(f"{n} img/s | x baseline | by CPU time" for n in nets) + " |"
    rows = ["CPU optimisations one at a time in the minimal loop (steady state), then the winners together, "
            "then in our loop (through Accelerate's settings), then changes to our step that the package has no "
            "switch for (bench/proposals.py: the step assembled from the package's pieces); each group's ratios "
            "are to its first row:", "", header, "|---|" + "---|---|---|" * len(nets)]  # fmt: skip
    for group in ("minimal", "combined", "ours", "proposals"):
        for name in dict.fromkeys(name for n in nets for name in study[n].get(group, {})):
            cells = []
            for n in nets:
                runs = study[n].get(group, {})
                base = next(iter(runs), None)
                run = runs.get(name)
                if run is None:
                    cells.append("n/a | | ")
                elif "error" in run:
                    cells.append(f"{run['error'][:60]} | | ")
                else:
                    cells.append(f"{rate(steady(run))} | {fmt(ratio(steady(run), steady(runs.get(base))), 2, 'x')} "
                                 f"| {fmt(ratio(cpu(run), cpu(runs.get(base))), 2, 'x')}")  # fmt: skip
            label = name
            if group == "combined":
                label = "baseline, measured again beside:" if name == "baseline" else f"together: {name}"
            rows.append(f"| {label} | " + " | ".join(cells) + " |")
    compile_s = [f"{n} {fmt(study[n].get('compile_cold_warmup_s'), 1)} s" for n in nets]
    runs = ", ".join(f"{n}: {study[n]['steps']} G steps ({study[n]['warmup']} warm-up) x {study[n]['repeats']}"
                     for n in nets)  # fmt: skip
    spread = ", ".join(f"{n} {' / '.join(fmt(x) for x in study[n].get('baseline_rounds', []))}" for n in nets)
    notes = ["", f"Runs: {runs} rounds; the baseline's rounds gave {spread} img/s, the noise to read the "
             f"ratios against. torch.compile's first warm-up (set-up and first steps, compiling with an empty "
             f"cache): {', '.join(compile_s)}. Faster than the baseline by more than {r.get('win', 1.03)}x: "
             + "; ".join(f"{n}: {', '.join(study[n].get('winners', [])) or 'none'}" for n in nets) + "."]  # fmt: skip
    return rows + notes + [""]


def evaluator_rows(r: dict) -> list[str]:
    e = r.get("evaluator")
    if not e:
        return []
    n = e["num_samples"]
    ours, raw, fixed = min(e["evaluator_s"]), min(e["raw_s"]), e["metrics_s"]
    return [
        f"Evaluator, one checkpoint, N={n} generated images, batch {e['batch_size']} (best of "
        f"{len(e['evaluator_s'])}, alternated), Inception weights `{e['weights']}`:",
        "",
        "| | seconds | img/s | x raw extraction |",
        "|---|---|---|---|",
        f"| evaluator: load G, generate, Inception features, FID+KID, metrics.jsonl | {fmt(ours, 2)} "
        f"| {fmt(n / ours, 1)} | {fmt(raw / ours, 2, 'x')} |",
        f"| torch-fidelity's raw feature extraction of the same images | {fmt(raw, 2)} | {fmt(n / raw, 1)} | 1.00x |",
        f"| evaluator without FID+KID from the features (fixed per checkpoint: {fmt(fixed, 2)} s) "
        f"| {fmt(ours - fixed, 2)} | {fmt(n / (ours - fixed), 1)} | {fmt(raw / (ours - fixed), 2, 'x')} |",
        "",
        f"Real-data statistics of {e['num_real']} images: computed {fmt(e['real_miss_s'], 2)} s, loaded from the "
        f"cache {fmt(min(e['real_hit_s']), 3)} s. Peak RSS of the evaluator section: {e.get('peak_rss_mib', '-')} MiB.",
        "",
    ]


def ddp_rows(r: dict) -> list[str]:
    d = r.get("ddp")
    if not d:
        return []
    runs = d["runs"]
    base_name = next(iter(runs))
    base = steady(runs[base_name])
    rows = [f"Data parallel on the CPU (gloo), {d['preset']}, batch {d['batch_size']} per process, "
            f"{d['steps']} G steps (steady state from the loop's log), best of {d['repeats']}:", "",
            "| processes x threads each | img/s, all processes | x 1 process x 1 thread | scaling efficiency |",
            "|---|---|---|---|"]  # fmt: skip
    for name, run in runs.items():
        speedup = ratio(steady(run), base)
        procs = run.get("processes") or 1
        eff = fmt(speedup / procs * 100, 0, "%") if speedup and procs > 1 else "-"
        cell = run["error"][:80] if "error" in run else rate(steady(run))
        rows.append(f"| {name} | {cell} | {fmt(speedup, 2, 'x')} | {eff} |")
    return rows + [""]


def render(r: dict) -> str:
    parts = machine_lines(r) + preset_rows(r) + target_lines(r) + study_rows(r) + evaluator_rows(r) + ddp_rows(r)
    return "\n".join(parts).rstrip() + "\n"


def update_section(page: Path, text: str, markers: tuple[str, str] = (BEGIN, END)) -> None:
    """Replace what lies between the markers in page (a docs page) with text."""
    begin, end = markers
    content = page.read_text()
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    if not pattern.search(content):
        raise GanError(f"{page} has no {begin} ... {end} markers to write the tables between")
    page.write_text(pattern.sub(lambda _: f"{begin}\n{text}{end}", content, count=1))

"""bench/gpu_results.json as Markdown, written between docs/performance.md's `<!-- gpu -->` markers."""

from bench.readme import PERFORMANCE_PAGE, fmt, rate, ratio, update_section

MARKERS = ("<!-- gpu -->", "<!-- /gpu -->")
ANCHOR_IMG_PER_S = 700  # StudioGAN's DCGAN-CIFAR10 log: 200k steps at batch 64 in ~5.2 h on a TITAN RTX


def steady(cell: dict | None) -> float | None:
    return cell.get("steady_img_per_s") if cell and "error" not in cell else None


def train_rows(r: dict) -> list[str]:
    cells = {(c["preset"], c["batch"], c["precision"], c["compile"]): c for c in r["train"]}
    rows = ["| preset | batch | precision | eager img/s | MFU | peak GiB | compiled img/s | MFU | x eager |",
            "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for preset, batch, precision, compiled in cells:
        if compiled:
            continue
        eager, comp = cells[(preset, batch, precision, False)], cells.get((preset, batch, precision, True))
        failures = r.get("compile_failures", {})
        comp_cells = "not run (time budget) | | "
        if any(what.startswith(f"{preset} b{batch} {precision} ") for what in failures):
            comp_cells = "fails (below) | | "
        elif any(what.startswith(f"{preset} ") for what in failures):
            comp_cells = "not run: another cell of this network failed (below) | | "
        if comp is not None:
            comp_cells = (f"{rate(steady(comp))} | {fmt(comp.get('mfu_measured_peak', 0) * 100, 1, '%')} "
                          f"| {fmt(ratio(steady(comp), steady(eager)), 2, 'x')}")  # fmt: skip
        rows.append(f"| {preset} | {batch} | {precision} | {rate(steady(eager))} "
                    f"| {fmt(eager.get('mfu_measured_peak', 0) * 100, 1, '%')} | {fmt(eager['peak_mem_gib'], 2)} "
                    f"| {comp_cells} |")  # fmt: skip
    return rows


def minimal_rows(r: dict) -> list[str]:
    ours = {(c["batch"], c["precision"]): c for c in r["train"] if c["preset"] == "dcgan_cifar10" and not c["compile"]}
    rows = ["| dcgan_cifar10, eager | ours img/s | minimal loop img/s | ours / minimal |", "|---|---|---|---|"]
    for m in r["minimal"]:
        o = ours.get((m["batch"], m["precision"]))
        rows.append(f"| batch {m['batch']}, {m['precision']} | {rate(steady(o))} | {rate(steady(m))} "
                    f"| {fmt(ratio(steady(o), steady(m)), 2, 'x')} |")  # fmt: skip
    return rows


def evaluator_rows(r: dict) -> list[str]:
    e = r["evaluator"]
    if not e:
        return []
    return [
        f"Evaluator on the GPU: Inception features of {e['num_real']:,} real digits and {e['num_generated']:,} "
        f"images of a dcgan_mnist G trained there ({e['g_steps']} steps), batch 250. {r.get('evaluator_note', '')}",
        "",
        "| Inception arithmetic | img/s | FID | KID |",
        "|---|---|---|---|",
        f"| fp32 (TF32 off) | {rate(e['fp32']['img_per_s'])} | {e['fp32']['fid']:.6f} | {e['fp32']['kid']:.3e} |",
        f"| TF32 | {rate(e['tf32']['img_per_s'])} | {e['tf32']['fid']:.6f} | {e['tf32']['kid']:.3e} |",
        "",
        f"TF32 is {fmt(e['tf32_speedup'], 2, 'x')} as fast, moves features by up to {e['feature_max_abs_diff']:.2e} "
        f"and FID by {e['fid_relative_drift']:.2e} relative (KID {e['kid_relative_drift']:.2e}): "
        + ("under" if e["keep_tf32"] else "over")
        + " the 1e-4 we accept, so the evaluator runs Inception "
        + ("in TF32." if e["keep_tf32"] else "in strict fp32 (`gan/evaluation/features.py`: INCEPTION_TF32 = False)."),
    ]


def render(r: dict) -> str:
    peak = r["peak"]
    def best_bf16(batch: int) -> float | None:
        rates = [steady(c) for c in r["train"]
                 if c["preset"] == "dcgan_cifar10" and c["precision"] == "bf16" and c["batch"] == batch]  # fmt: skip
        return max((x for x in rates if x), default=None)

    best64, best256 = best_bf16(64), best_bf16(256)
    lines = [
        f"Measured by `python -m bench.gpu` on **{r['device']}** (torch {r['torch']}). Matmul peaks measured in "
        f"the same run (8192³): bf16 {fmt(peak['bf16'] / 1e12, 0)}, fp16 {fmt(peak['fp16'] / 1e12, 0)}, TF32 "
        f"{fmt(peak['fp32-tf32'] / 1e12, 0)}, fp32 {fmt(peak['fp32'] / 1e12, 0)} TFLOP/s. MFU is the step's counted "
        "FLOPs times img/s over the matmul peak of the cell's precision (fp32-tf32 cells: the TF32 peak). "
        "img/s: steady state, G-step images per second after a first log window of warm-up (which holds the "
        "compilation). Peak GiB: `torch.cuda.max_memory_allocated`. The data set sits on the GPU "
        "(`data.on_device`); CIFAR-10 cannot be downloaded there, so both presets train on the embedded digits "
        "at 32 px RGB, which costs the same per step.",
        "",
        *train_rows(r),
        "",
        f"Anchor: StudioGAN's DCGAN-CIFAR10 ran at about {ANCHOR_IMG_PER_S} img/s (batch 64, TITAN RTX); 20x "
        f"that is {20 * ANCHOR_IMG_PER_S:,}. Our dcgan_cifar10 in bf16: {rate(best64)} img/s at batch 64 "
        f"({fmt(ratio(best64, ANCHOR_IMG_PER_S), 1, 'x')}), {rate(best256)} img/s at batch 256 "
        f"({fmt(ratio(best256, ANCHOR_IMG_PER_S), 1, 'x')}).",
        "",
        "Our loop against the minimal hand-written loop (`bench/reference_loops.py`) on the same GPU:",
        "",
        *minimal_rows(r),
        "",
        *evaluator_rows(r),
    ]
    failures = r.get("compile_failures") or {}
    if failures:
        lines += ["", "torch.compile failures:", ""] + [f"- {what}: {why}." for what, why in failures.items()]
    notes = r.get("notes") or []
    if notes:
        lines += ["", "Not measured: " + "; ".join(notes) + "."]
    if r.get("fp16_scaler"):
        lines += ["", f"fp16 with one GradScaler for both optimizers: {r['fp16_scaler']}."]
    if r.get("invocations"):
        lines += ["", "Invocations, one after another on the same card:", ""]
        lines += [f"{i}. `{cmd.split('  (')[0]}`" + (f" ({cmd.split('  (', 1)[1]}" if "  (" in cmd else "")
                  for i, cmd in enumerate(r["invocations"], 1)]  # fmt: skip
    return "\n".join(lines).rstrip() + "\n"


def update_gpu_section(results: dict) -> None:
    update_section(PERFORMANCE_PAGE, render(results), MARKERS)

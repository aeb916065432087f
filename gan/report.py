"""A self-contained HTML report for runs whose W&B files stay offline (cluster nodes without internet).

python -m gan.report RUN_DIR [RUN_DIR ...] --out report.html [--table]

One page, PNG plots embedded: loss curves per run, FID against kimg (from metrics.jsonl, once the
evaluator has run), the latest sample grid of each run, and a table of each run's config
differences and its best-FID checkpoint's numbers (FID and every other metric it was scored with).
--table prints that table as markdown too (a sweep's tuning table); with --table, --out is optional.
"""

import base64
import html
import io
import json
import sys
from pathlib import Path

from gan.cli import ArgumentParser
from gan.config import flatten, from_dict, read_yaml, to_dict
from gan.errors import GanError, exit_on_user_error
from gan.files import read_jsonl, write_atomic
from gan.run_folder import STEP_NAME, RunFolder


class RunSummary:
    def __init__(self, run_dir: Path):
        folder = RunFolder(run_dir)
        if not folder.config.is_file():
            raise GanError(f"{str(run_dir)!r} is not a run folder (no config.yaml)")
        self.dir = run_dir
        self.name = run_dir.resolve().name
        self.config = flatten(resolved(read_yaml(folder.config), folder.config))
        self.log = [r for r in read_jsonl(folder.train_log) if isinstance(r.get("step"), int)]
        self.metrics = [m for m in read_jsonl(folder.metrics) if m.get("fid") is not None]
        samples = sorted(folder.samples.glob("step-*.png"))
        self.latest_sample = samples[-1] if samples else None

    @property
    def best_fid(self) -> dict | None:
        return min(self.metrics, key=lambda m: m["fid"]) if self.metrics else None


def resolved(stored: dict, path: Path) -> dict:
    """A stored config with today's defaults for the keys added since it was written, so that a key
    new to the package is not shown as a difference; as stored where it no longer reads as a config."""
    try:
        return to_dict(from_dict(stored, source=str(path)))
    except GanError:
        return stored


def png_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def figure_png(draw) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=100)
    draw(ax)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def loss_plot(runs: list[RunSummary]) -> bytes:
    def draw(ax):
        for run in runs:
            steps = [r["step"] for r in run.log]
            for key, style in (("loss/D", "-"), ("loss/G", "--")):
                ax.plot(steps, [r.get(key) for r in run.log], style, label=f"{run.name} {key}")
        ax.set_xlabel("generator step")
        ax.set_ylabel("loss")
        ax.set_title("Losses")

    return figure_png(draw)


def fid_plot(runs: list[RunSummary]) -> bytes:
    def draw(ax):
        for run in runs:
            rows = sorted(run.metrics, key=lambda m: m["kimg"])
            ax.plot([m["kimg"] for m in rows], [m["fid"] for m in rows], "o-", label=run.name)
        ax.set_xlabel("kimg")
        ax.set_ylabel("FID")
        ax.set_title("FID against images seen")

    return figure_png(draw)


def config_differences(runs: list[RunSummary]) -> list[str]:
    keys = sorted({k for run in runs for k in run.config})
    return [k for k in keys if len({json.dumps(run.config.get(k)) for run in runs}) > 1]


def other_numbers(runs: list[RunSummary]) -> list[str]:
    """The record keys besides FID that some run's best-FID record holds, in the metrics' order."""
    from gan.evaluation.metrics import columns

    held = {key for run in runs if run.best_fid for key, value in run.best_fid.items() if value is not None}
    return [key for key, _ in columns() if key != "fid" and key in held]


def table_rows(runs: list[RunSummary]) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the runs table: name, logged step, config differences, best FID and its numbers."""
    differing, numbers = config_differences(runs), other_numbers(runs)
    header = ["run", "logged step", *differing, "best FID", *numbers]
    rows = []
    for run in runs:
        best = run.best_fid
        values = [best.get(key) if best else None for key in numbers]
        rows.append([run.name, str(run.log[-1]["step"] if run.log else 0),
                     *(json.dumps(run.config.get(k)) for k in differing),
                     f"{best['fid']:.2f} (step {best['step']})" if best else "not evaluated",
                     *("" if v is None else f"{v:.4g}" for v in values)])  # fmt: skip
    return header, rows


def markdown_table(runs: list[RunSummary]) -> str:
    header, rows = table_rows(runs)
    lines = [header, ["---"] * len(header), *rows]
    return "\n".join("| " + " | ".join(cell.replace("|", "\\|") for cell in line) + " |" for line in lines)


def render(runs: list[RunSummary]) -> str:
    e = html.escape
    header, body = table_rows(runs)
    head = "".join(f"<th>{e(k)}</th>" for k in header)
    rows = ["<tr>" + "".join(f"<td>{e(cell)}</td>" for cell in row) + "</tr>" for row in body]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>GAN runs</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px}img{max-width:100%}</style></head><body>",
        f"<h1>GAN runs ({len(runs)})</h1>",
        f"<h2>Runs</h2><table id='runs'><tr>{head}</tr>{''.join(rows)}</table>",
        f"<h2>Losses</h2><img id='losses' alt='loss curves' src='{png_data_uri(loss_plot(runs))}'>",
    ]
    if any(run.metrics for run in runs):
        parts.append(f"<h2>FID</h2><img id='fid' alt='FID against kimg' src='{png_data_uri(fid_plot(runs))}'>")
    else:
        parts.append("<h2>FID</h2><p>No run has been evaluated yet (python evaluate.py RUN_DIR).</p>")
    parts.append("<h2>Latest samples</h2>")
    for run in runs:
        if run.latest_sample is not None:
            step = STEP_NAME.match(run.latest_sample.stem)
            caption = f"{run.name}, step {int(step.group(1)) if step else '?'}"
            uri = png_data_uri(run.latest_sample.read_bytes())
            parts.append(f"<figure><img class='samples' alt='{e(caption)}' src='{uri}'>"
                         f"<figcaption>{e(caption)}</figcaption></figure>")  # fmt: skip
    parts.append("</body></html>")
    return "\n".join(parts)


@exit_on_user_error
def main(argv=None) -> int:
    parser = ArgumentParser(prog="python -m gan.report", description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR")
    parser.add_argument("--out", type=Path, help="the HTML file to write")
    parser.add_argument("--table", action="store_true", help="print the runs table as markdown")
    args = parser.parse_args(argv)
    if args.out is None and not args.table:
        raise GanError("give --out report.html, --table, or both")
    runs = [RunSummary(path) for path in args.run_dirs]
    if args.table:
        print(markdown_table(runs))
    if args.out is None:
        return 0
    if args.out.is_dir():
        raise GanError(f"--out {str(args.out)!r} is a folder; give the HTML file to write, "
                       f"such as {str(args.out / 'report.html')!r}")  # fmt: skip
    page = render(runs)
    try:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(args.out, page)
    except OSError as err:  # a parent that is a file, a read-only or full disk
        raise GanError(f"--out {str(args.out)!r} cannot be written ({err.strerror or err})") from None
    print(f"wrote {args.out} ({len(runs)} runs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Export a run's generator so that it leaves the project: a Hugging Face Hub folder, TorchScript or ONNX.

python -m gan.export RUN_OR_CHECKPOINT --out DIR [--format hub|torchscript|onnx] [--push REPO_ID]

The generator is G_ema where the run keeps one, else G, of the run's newest checkpoint (or of the
checkpoint folder given). DIR must not exist, or be an empty folder: nothing is ever overwritten.

- hub (the default): written by huggingface_hub's PyTorchModelHubMixin: DIR/config.json (the run's
  resolved config, its classes and the images per class), DIR/model.safetensors, and a model card
  DIR/README.md (the preset, the training length, the checkpoint's FID and settings where the
  evaluator scored it, a 64-image grid DIR/samples.png). `gan.export.Generator.from_pretrained(DIR
  or REPO_ID)` rebuilds G with this package, without the run folder. --push REPO_ID uploads DIR to
  the Hub (a network and a token, HF_TOKEN or `hf auth login`, are needed).
- torchscript: DIR/generator.pt, traced; `torch.jit.load` runs it without this package.
- onnx: DIR/generator.onnx (torch.onnx, opset 18); onnxruntime runs it.

The TorchScript and ONNX graphs take z (N, z_dim) float32 and labels (N,) int64 (any values for an
unconditional G) and return images (N, C, H, W) in [-1, 1]; N is free.
"""

import importlib.util
import json
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

import torch
from huggingface_hub import PyTorchModelHubMixin
from torch import nn

from gan.checkpoint import load_generator
from gan.cli import ArgumentParser
from gan.errors import GanError, exit_on_user_error, quote
from gan.files import read_jsonl
from gan.run_folder import RunFolder
from gan.samples import fixed_noise, generate_images, save_grid

FORMATS = ("hub", "torchscript", "onnx")
ONNX_OPSET = 18


class Generator(nn.Module, PyTorchModelHubMixin, library_name="gan", tags=["gan", "image-generation"]):
    """A run's generator as a Hub model, built from the run's config that config.json holds (run_config;
    not `config`, which the mixin would merge into config.json's top level).

    forward(z, labels=None) -> images in [-1, 1]; labels default to class 0 (ignored when unconditional).
    """

    def __init__(self, run_config: dict, num_classes: int = 0, class_counts: list[int] | None = None):
        from gan.config import from_dict
        from gan.networks import build_networks

        super().__init__()
        cfg = from_dict(run_config, source="the exported config.json")
        self.net, _ = build_networks(cfg, num_classes)
        self.z_dim, self.num_classes = self.net.z_dim, num_classes
        self.class_counts = list(class_counts or [])
        self.image_shape = (cfg.data.channels, cfg.data.resolution, cfg.data.resolution)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if labels is None:
            labels = torch.zeros(len(z), dtype=torch.long, device=z.device)
        return self.net(z, labels)


def hub_model(G, cfg) -> Generator:
    """G (from load_generator) as a Generator with the same weights."""
    from gan.config import to_dict

    model = Generator(to_dict(cfg), G.num_classes, G.class_counts)
    model.net.load_state_dict(G.state_dict())
    return model.eval()


def export_hub(G, cfg, out: Path, card: str) -> None:
    hub_model(G, cfg).save_pretrained(out)
    z, c = fixed_noise(64, G.z_dim, 0, G.num_classes)
    save_grid(generate_images(G, z, c), out / "samples.png")
    (out / "README.md").write_text(card)


def model_card(cfg, found) -> str:
    """The Hub's README.md: front matter for the Hub, then what the model is and how it scored."""
    run_dir = found.path.parent.parent
    scored = [r for r in read_jsonl(RunFolder(run_dir).metrics, warn=False) if r.get("step") == found.step]
    numbers = [f"- {key}: {r[key]:.4g} ({r.get('num_samples')} samples; settings {json.dumps(r.get('settings'))})"
               for r in scored for key in ("fid", "kid_mean", "is_mean", "fd_mnist", "precision", "recall")
               if isinstance(r.get(key), int | float)]  # fmt: skip
    best = read_best(run_dir)
    if best is not None:
        numbers.append(f"- the run's best FID: {best['fid']:.4g} at step {best['step']:,} ({best.get('num_samples')} samples; "
                       f"settings {json.dumps(best.get('settings'))}){' (this checkpoint)' if best['step'] == found.step else ''}")
    kimg = found.meta.get("kimg")
    return "\n".join([
        "---", "library_name: gan", "tags:", "- gan", "- image-generation", f"- {cfg.model.network}", "---", "",
        f"# {cfg.preset}: a {cfg.model.network} generator",
        "",
        f"Trained by gan (`train.py --config configs/{cfg.preset}.yaml`) on "
        f"`data.name={cfg.data.name}` at {cfg.data.resolution} px, {cfg.data.channels} channel(s), for "
        f"{found.step:,} generator steps ({kimg if kimg is not None else '?'} kimg), loss `{cfg.loss.name}`.",
        "",
        "## Use",
        "",
        "```python",
        "import torch",
        "from gan.export import Generator",
        "G = Generator.from_pretrained('THIS_FOLDER_OR_REPO').eval()",
        "images = G(torch.randn(16, G.z_dim))  # (16, C, H, W) in [-1, 1]",
        "```",
        "",
        "## Scores",
        "",
        *(numbers or ["Not evaluated (`python evaluate.py RUN --checkpoints all` scores every checkpoint)."]),
        "",
        "![64 samples](samples.png)",
        "",
    ])  # fmt: skip


def read_best(run_dir: Path) -> dict | None:
    """best.json of the run (the evaluator's best FID), or None where it is missing or unreadable."""
    try:
        best = json.loads(RunFolder(run_dir).best.read_text())
    except (OSError, ValueError):
        return None
    return best if isinstance(best, dict) and isinstance(best.get("fid"), int | float) and "step" in best else None


def export_traced(G, out: Path, fmt: str) -> None:
    z = torch.randn(2, G.z_dim)
    labels = torch.zeros(2, dtype=torch.long)
    if fmt == "torchscript":
        with warnings.catch_warnings():  # the tracer's notes on Python values it records as constants
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(G, (z, labels), check_trace=False)
        traced.save(str(out / "generator.pt"))
        return
    torch.onnx.export(G, (z, labels), str(out / "generator.onnx"), input_names=["z", "labels"],
                      output_names=["images"], opset_version=ONNX_OPSET, external_data=False, verbose=False,
                      dynamic_shapes={"z": {0: torch.export.Dim("batch")}, "labels": {0: torch.export.Dim("batch")}})  # fmt: skip


def check_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise GanError(f"--out {quote(str(out))} exists and is not an empty folder; export into a new folder")


def push(out: Path, repo_id: str) -> None:
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    try:
        api = HfApi()
        api.create_repo(repo_id, exist_ok=True)
        api.upload_folder(folder_path=str(out), repo_id=repo_id)
    except (OSError, HfHubHTTPError, ValueError) as err:  # offline, no token, a bad repo id
        raise GanError(f"--push {repo_id}: the upload failed ({str(err).splitlines()[0][:200]}); the export is in "
                       f"{quote(str(out))}: push it later with `hf upload {repo_id} {out}`") from None  # fmt: skip


@exit_on_user_error
def main(argv=None) -> int:
    parser = ArgumentParser(prog="python -m gan.export", description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="a run folder (newest checkpoint) or a checkpoint folder")
    parser.add_argument("--out", type=Path, required=True, help="a new (or empty) folder")
    parser.add_argument("--format", choices=FORMATS, default="hub")
    parser.add_argument("--push", metavar="REPO_ID", help="hub only: upload the folder to this Hub repository")
    args = parser.parse_args(argv)
    if args.push and args.format != "hub":
        raise GanError(f"--push uploads a hub export; --format {args.format} writes a file to copy yourself")
    check_out(args.out)
    if args.format == "onnx":
        missing = [name for name in ("onnx", "onnxscript") if importlib.util.find_spec(name) is None]
        if missing:
            raise GanError(f"--format onnx needs {' and '.join(missing)} (torch.onnx.export uses them): "
                           "pip install 'gan[export]'")  # fmt: skip
    G, cfg, found = load_generator(args.source)
    # written into a temporary folder beside --out, then renamed: a failed export leaves nothing
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{args.out.name}.", dir=args.out.parent))
    try:
        if args.format == "hub":
            export_hub(G, cfg, tmp, model_card(cfg, found))
        else:
            export_traced(G, tmp, args.format)
        if args.out.exists():
            args.out.rmdir()  # empty: checked above
        tmp.rename(args.out)
    except OSError as err:
        raise GanError(f"--out {quote(str(args.out))} cannot be written ({err.strerror or err})") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"exported {found.path} (step {found.step}) as {args.format} to {args.out}")
    if args.push:
        push(args.out, args.push)
        print(f"pushed {args.out} to https://huggingface.co/{args.push}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

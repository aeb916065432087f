"""Train a GAN: `accelerate launch train.py [--config configs/NAME.yaml] [--run-dir DIR] [key.sub=value ...]`.

`python train.py ...` and the installed `gan-train ...` run the same as one process. Without
--config the default preset configs/dcgan_mnist.yaml is trained; without --run-dir the run folder
is runs/<preset name> below the current folder, or runs/<sweep id>/<run id> when `wandb agent`
started the command (docs/tracking.md#sweeps). A second launch with the same run folder resumes
from its newest complete checkpoint.
"""

from pathlib import Path

from gan.cli import ArgumentParser, is_main_process
from gan.config import load_config, to_yaml
from gan.errors import GanError, exit_on_user_error
from gan.wandb_run import sweep_run

DEFAULT_PRESET = "dcgan_mnist"
# The presets lie beside the package in the repository (an editable install keeps them there).
PRESETS = Path(__file__).resolve().parents[1] / "configs"


def default_preset() -> Path:
    path = PRESETS / f"{DEFAULT_PRESET}.yaml"
    if not path.is_file():
        raise GanError(f"no --config given, and the default preset {path} is missing (the package is "
                       "installed without its repository); pass --config PATH_TO_PRESET.yaml")  # fmt: skip
    return path


def default_run_dir(preset: str) -> Path:
    """runs/<preset>, relative to the current folder; a preset name that is not a plain name is refused."""
    if preset in ("", ".", "..") or Path(preset).name != preset or "\\" in preset:
        raise GanError(f"preset {preset!r} is not a plain name, so runs/<preset> cannot be the run folder; "
                       "pass --run-dir")  # fmt: skip
    return Path("runs") / preset


def shown(path: Path) -> str:
    """The path relative to the current folder where it lies below it, else absolute."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


@exit_on_user_error
def main(argv=None) -> int:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", help=f"a preset (default: configs/{DEFAULT_PRESET}.yaml)")
    parser.add_argument(
        "--run-dir",
        type=Path,
        help="the run folder: config, checkpoints, samples, logs (default: runs/<preset name> below the "
        "current folder; under `wandb agent`, runs/<sweep id>/<run id>); a run there resumes",
    )
    parser.add_argument("--dry-run", action="store_true", help="check and print the resolved config, and exit")
    parser.add_argument("overrides", nargs="*", metavar="key.sub=value", help="e.g. train.steps=500")
    args = parser.parse_args(argv)
    config = args.config or default_preset()
    cfg = load_config(config, args.overrides)
    if args.dry_run:
        from gan.networks._resolutions import check_resolution

        check_resolution(cfg)  # a size the network cannot produce fails here too, not only in training
        print(to_yaml(cfg), end="")
        return 0
    sweep = sweep_run() if args.run_dir is None else None  # (sweep id, run id) under `wandb agent`
    run_dir = args.run_dir or (Path("runs", *sweep) if sweep else default_run_dir(cfg.preset))
    if is_main_process() and args.config is None:
        print(f"no --config: training the default preset {shown(config)} into {run_dir}", flush=True)
    elif is_main_process() and args.run_dir is None:
        agent = f" (W&B sweep {sweep[0]}, run {sweep[1]})" if sweep else ""
        print(f"no --run-dir: training into {run_dir}{agent}", flush=True)

    from gan.train_loop import train  # heavy imports only when training

    return train(cfg, run_dir)

"""Strict config: typed dataclass defaults, YAML presets, dotted `key=value` overrides.

A preset names only the keys it changes. Unknown keys and wrong types are errors that
name the key and what it accepts. The resolved config is saved in the run folder,
stored in every checkpoint and logged to the tracker.
"""

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from gan.errors import GanError

SCIENTIFIC = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")  # 1e-4, 2.5E3: floats that PyYAML leaves as text


@dataclass
class ModelConfig:
    network: str = "dcgan"  # registry name: mlp, dcgan, resnet
    z_dim: int = 100  # length of the noise vector z
    hidden_dim: int = 256  # mlp: width of the hidden layers
    g_channels: int = 64  # conv nets: G's base channel count
    d_channels: int = 64  # conv nets: D's base channel count
    spectral_norm: bool = False  # spectral norm on D's conv/linear/embedding weights (Miyato et al. 2018)
    conditional: bool = False  # class-conditional: conditional BatchNorm in G, projection D (dcgan, resnet)
    # normalisation in D's hidden layers: batch, layer or none; None = the network's own (dcgan: batch,
    # resnet and mlp: none). The gradient penalties need layer or none: they are per-image gradients.
    d_norm: str | None = None


@dataclass
class DataConfig:
    name: str = "mnist5k"  # registry name: mnist5k, mnist, fashion_mnist, cifar10, image_folder
    root: str = "data"  # where torchvision data sets download to, or the image_folder path
    resolution: int = 28  # side of the square images, px
    channels: int = 1  # 1 = grayscale, 3 = RGB
    limit: int | None = None  # use only the first N images; None = all
    # keep the uint8 data set in the accelerator's memory and index batches there (no host-to-device
    # copy per step); false for a data set larger than GPU memory. No effect on CPU.
    on_device: bool = True


@dataclass
class LossConfig:
    name: str = "bce"  # registry name: bce (non-saturating), hinge, lsgan, wgan (Wasserstein critic)
    gp_weight: float = 0.0  # WGAN-GP's lambda: weight of E[(|grad D(x_hat)| - 1)^2] on interpolates; 0 = off
    r1_weight: float = 0.0  # R1's gamma: weight of gamma/2 E[|grad D(x_real)|^2]; 0 = off
    r1_every: int = 1  # lazy R1: applied every r1_every-th D step, weighted by r1_every (StyleGAN2: 16)


@dataclass
class OptimConfig:
    lr_g: float = 2e-4  # Adam learning rate of G
    lr_d: float = 2e-4  # Adam learning rate of D
    betas: list[float] = field(default_factory=lambda: [0.5, 0.999])  # Adam (beta1, beta2)


@dataclass
class TrainConfig:
    steps: int = 2000  # total generator steps
    n_critic: int = 1  # D steps per G step, each on its own real batch (WGAN-GP: 5)
    batch_size: int = 64  # images per batch, per process
    checkpoint_every: int = 500  # generator steps between checkpoints (one is always written at the end)
    sample_every: int = 250  # generator steps between fixed-noise sample grids
    log_every: int = 50  # generator steps between logged scalars
    seed: int = 0  # random seed; each process adds its rank
    keep_checkpoints: int = 3  # how many of the newest complete checkpoints to keep
    ema_decay: float | None = 0.999  # decay of G_ema per step; None = no EMA copy
    # EMA ramp-up: G_ema's time constant 1 / (1 - decay), in steps, is at most this fraction of the
    # steps done, so early, fast-changing weights fade out; None = the constant ema_decay throughout
    ema_rampup: float | None = None
    num_samples: int = 64  # images in the fixed-noise sample grid
    on_nonfinite: str = "stop"  # non-finite loss: stop (exit non-zero) or skip (drop the update)
    max_nonfinite_skips: int = 10  # with on_nonfinite=skip: stop after this many skips in a row
    tf32: bool = True  # fp32 matmuls and convolutions in TF32 on NVIDIA GPUs (Ampere and later); no effect on CPU


@dataclass
class WandbConfig:
    mode: str | None = None  # online, offline or disabled; None = online with an API key, else offline
    project: str = "gan"  # W&B project
    entity: str | None = None  # W&B entity (user or team); None = the account's default
    group: str | None = None  # run group; None = the preset's name
    tags: list[str] = field(default_factory=list)  # extra tags; the network and loss are always added
    name: str | None = None  # run name; None = the run folder's name


@dataclass
class EvalConfig:
    # torch-fidelity's Inception weights file (weights-inception-2015-12-05-6726825d.pth); None = the
    # GAN_INCEPTION_WEIGHTS environment variable, the torch hub cache, a download, else offline weights
    inception_weights: str | None = None


@dataclass
class AugmentConfig:
    # DiffAugment (Zhao et al. 2020) on every image D sees, real and generated, in this order:
    # any of translation, cutout, color; [] = none
    policy: list[str] = field(default_factory=list)


@dataclass
class Config:
    preset: str = "custom"  # the preset's name: the config file's stem unless set
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


# --------------------------------------------------------------------------- typing


def _type_name(tp) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    return "null" if tp is type(None) else tp.__name__


def _coerce(value, tp, key: str):
    """Return value checked against the annotation tp; ints are accepted for floats."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(tp):
            try:
                return _coerce(value, option, key)
            except GanError:
                pass
    elif origin is list:
        if isinstance(value, list | tuple):
            (item_type,) = typing.get_args(tp)
            return [_coerce(v, item_type, f"{key}[{i}]") for i, v in enumerate(value)]
    elif tp is type(None):
        if value is None:
            return None
    elif tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and SCIENTIFIC.fullmatch(value):  # YAML 1.1 reads 1e-4 as a string
            return float(value)
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(value, tp):
        return value
    raise GanError(f"{key}: expected {_type_name(tp)}, got {value!r}")


def _merge(obj, updates: dict, prefix: str = "") -> None:
    """Write the dict `updates` into the dataclass `obj`, strictly."""
    if not isinstance(updates, dict):
        raise GanError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {updates!r}")
    fields = {f.name: f for f in dataclasses.fields(obj)}
    hints = typing.get_type_hints(type(obj))
    for name, value in updates.items():
        key = f"{prefix}{name}"
        if name not in fields:
            raise GanError(f"unknown config key {key!r}; legal keys here: {', '.join(fields)}")
        current = getattr(obj, name)
        if dataclasses.is_dataclass(current):
            _merge(current, value, prefix=f"{key}.")
        else:
            setattr(obj, name, _coerce(value, hints[name], key))


def parse_override(text: str) -> dict:
    """`train.steps=10` -> {"train": {"steps": 10}}; the value is parsed as YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise GanError(f"override {text!r} is not of the form key.sub=value")
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError as err:
        raise GanError(f"override {text!r}: the value is not valid YAML ({err.__class__.__name__})") from None
    nested: dict = value
    for part in reversed(key.split(".")):
        nested = {part: nested}
    return nested


# --------------------------------------------------------------------------- loading


def read_yaml(path: Path) -> dict:
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise GanError(f"config file {str(path)!r} does not exist") from None
    except OSError as err:
        raise GanError(f"config file {str(path)!r} cannot be read: {err.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise GanError(f"config file {str(path)!r} is not valid YAML: {err}".splitlines()[0]) from None
    if data is not None and not isinstance(data, dict):
        raise GanError(f"config file {str(path)!r}: expected a mapping of sections (model:, data:, train:, ...), "
                       f"got a {type(data).__name__}")  # fmt: skip
    return data or {}


def from_dict(data: dict) -> Config:
    cfg = Config()
    _merge(cfg, data)
    validate(cfg)
    return cfg


def load_config(path: str | Path | None, overrides: list[str] = ()) -> Config:
    """Defaults, then the preset file, then the overrides in order; validated."""
    cfg = Config()
    if path is not None:
        data = read_yaml(Path(path))
        data.setdefault("preset", Path(path).stem)
        _merge(cfg, data)
    for text in overrides:
        _merge(cfg, parse_override(text))
    validate(cfg)
    return cfg


def to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def to_yaml(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def flatten(data: dict, prefix: str = "") -> dict:
    """{"train": {"steps": 1}} -> {"train.steps": 1}"""
    flat = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


# --------------------------------------------------------------------------- validation


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise GanError(message)


def _positive(cfg: Config, *keys: str) -> None:
    flat = flatten(to_dict(cfg))
    for key in keys:
        value = flat[key]
        _check(value is None or value > 0, f"{key} must be > 0, got {value!r}")


def validate(cfg: Config) -> None:
    """Ranges and enums; network/data compatibility is checked where the network is built."""
    import gan.augment  # noqa: F401  (registers augmentations)
    import gan.data  # noqa: F401  (registers data sets)
    import gan.losses  # noqa: F401  (registers losses)
    import gan.networks  # noqa: F401  (registers networks)
    from gan.registry import AUGMENTATIONS, DATASETS, LOSSES, NETWORKS  # filled by the imports above

    NETWORKS.get(cfg.model.network, "model.network")
    LOSSES.get(cfg.loss.name, "loss.name")
    DATASETS.get(cfg.data.name, "data.name")
    _positive(
        cfg,
        "model.z_dim", "model.hidden_dim", "model.g_channels", "model.d_channels",
        "data.resolution", "data.limit", "optim.lr_g", "optim.lr_d",
        "train.steps", "train.batch_size", "train.checkpoint_every", "train.sample_every",
        "train.n_critic", "loss.r1_every", "train.log_every", "train.keep_checkpoints", "train.num_samples", "train.max_nonfinite_skips",
    )  # fmt: skip
    _check(cfg.data.channels in (1, 3), f"data.channels must be 1 or 3, got {cfg.data.channels}")
    _check(
        len(cfg.optim.betas) == 2 and all(0 <= b < 1 for b in cfg.optim.betas),
        f"optim.betas must be two numbers in [0, 1), got {cfg.optim.betas}",
    )
    _check(cfg.train.seed >= 0, f"train.seed must be >= 0, got {cfg.train.seed}")
    _validate_family(cfg, AUGMENTATIONS)
    decay = cfg.train.ema_decay
    _check(decay is None or 0 < decay < 1, f"train.ema_decay must be in (0, 1) or null, got {decay}")
    rampup = cfg.train.ema_rampup
    _check(rampup is None or rampup > 0, f"train.ema_rampup must be > 0 or null, got {rampup}")
    choices = ("stop", "skip")
    _check(
        cfg.train.on_nonfinite in choices,
        f"train.on_nonfinite: unknown value {cfg.train.on_nonfinite!r}; choose one of: {', '.join(choices)}",
    )
    modes = ("online", "offline", "disabled")
    _check(
        cfg.wandb.mode in (None, *modes),
        f"wandb.mode: unknown value {cfg.wandb.mode!r}; choose one of: {', '.join(modes)} (or null)",
    )


def _validate_family(cfg: Config, augmentations) -> None:
    """The keys of the GAN family: penalties, D's normalisation, augmentations."""
    for key in ("gp_weight", "r1_weight"):
        value = getattr(cfg.loss, key)
        _check(value >= 0, f"loss.{key} must be >= 0, got {value}")
    constrained = cfg.loss.gp_weight > 0 or cfg.loss.r1_weight > 0 or cfg.model.spectral_norm
    _check(
        cfg.loss.name != "wgan" or constrained,
        "loss.name=wgan needs a constraint on D: set loss.gp_weight (WGAN-GP: 10), loss.r1_weight "
        "or model.spectral_norm=true",
    )
    norms = ("batch", "layer", "none")
    _check(
        cfg.model.d_norm in (None, *norms),
        f"model.d_norm: unknown value {cfg.model.d_norm!r}; choose one of: {', '.join(norms)} (or null)",
    )
    for name in cfg.augment.policy:
        augmentations.get(name, "augment.policy")
    _check(
        len(set(cfg.augment.policy)) == len(cfg.augment.policy),
        f"augment.policy lists a transform twice: {cfg.augment.policy}",
    )

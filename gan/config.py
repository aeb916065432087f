"""Strict config: typed dataclass defaults, YAML presets, dotted `key=value` overrides.

A preset names only the keys it changes. Unknown keys and wrong types are errors that
name the key and what it accepts. The resolved config is saved in the run folder,
stored in every checkpoint and logged to the tracker.
"""

import contextlib
import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from gan.errors import GanError, cut, quote
from gan.registry import AUGMENTATIONS, DATASETS, LOSSES, NETWORKS

# 1e-4, 2.5E3, 1.0e10: floats that PyYAML leaves as text (YAML 1.1 wants a dot and a signed exponent)
SCIENTIFIC = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")

# What a config can hold. A preset is a few hundred bytes, 4 levels deep (file, section, list, item)
# and about 60 values; the limits are far above that and stop hostile YAML before anything walks it.
MAX_FILE_BYTES = 1 << 20  # bytes read from a config file: more is the wrong file (or /dev/zero)
MAX_DEPTH = 8  # levels of nesting: PyYAML and repr recurse per level and hit Python's limit at ~500
MAX_VALUES = 10_000  # values, counting an alias each time it is used: a YAML alias bomb stops here
MAX_PSEUDO_LABELS = 1000  # clusters of data.pseudo_labels: k-means' cost grows with each
MAX_STRING = 4096  # characters in a string value: Linux's PATH_MAX, the longest data.root can be



@dataclass
class ModelConfig:
    network: str = "dcgan"  # registry name: mlp, dcgan, resnet, r3gan
    z_dim: int = 100  # length of the noise vector z
    hidden_dim: int = 256  # mlp: width of the hidden layers
    g_channels: int = 64  # conv nets: G's base channel count
    d_channels: int = 64  # conv nets: D's base channel count
    spectral_norm: bool = False  # spectral norm on D's conv/linear/embedding weights (Miyato et al. 2018)
    # class-conditional: conditional BatchNorm in G, projection D (dcgan, resnet); a label embedding
    # joining z in G, projection D (r3gan)
    conditional: bool = False
    # normalisation in D's hidden layers: batch, layer or none; None = the network's own (dcgan: batch,
    # resnet, r3gan and mlp: none). The gradient penalties need layer or none: they are per-image gradients.
    d_norm: str | None = None
    # dcgan only: 3x3 stride-1 convs (each with its stage's norm and activation) added at each of G's
    # hidden stages, after the layer that makes the stage, and after each of D's stride-2 convs; 0 = the
    # paper's network (its reference code's n_extra_layers adds them at the image side only)
    g_extra_layers: int = 0
    d_extra_layers: int = 0
    # dcgan only: D's last feature map gains one channel, the standard deviation of the features over each
    # group of this many images of a batch (ProGAN's minibatch standard deviation; StyleGAN2's group of 4);
    # 0 = off. train.batch_size must be a multiple of it.
    d_mbstd_group: int = 0
    # r3gan only, the other networks ignore these four. widths: channels per stage from the first feature
    # map (4x4; 7x7 at 28 px) up to the image, one stage per side, shared by G and D (D runs the list
    # backwards); None = G's stages all g_channels wide, D's all d_channels
    widths: list[int] | None = None
    blocks: int | list[int] = 2  # residual blocks per stage: one number for every stage, or a list as widths
    expansion: int = 2  # a block's inner width, as a multiple of its stage's width
    group_size: int = 16  # channels per group of a block's grouped 3x3 conv; cardinality = inner width / this


@dataclass
class DataConfig:
    name: str = "mnist5k"  # registry name: mnist5k, mnist, fashion_mnist, cifar10, image_folder, prepared
    root: str = "data"  # where torchvision data sets download to, the image_folder path, or the prepared set
    resolution: int = 28  # side of the square images, px
    channels: int = 1  # 1 = grayscale, 3 = RGB
    limit: int | None = None  # use only the first N images; None = all
    # on a GPU: copy the uint8 data set to its memory and index batches there (no host-to-device copy
    # per step) when it takes under gan.data.ON_DEVICE_FRACTION of it; else, or false, batches stream
    # from pinned host memory. No effect on CPU.
    on_device: bool = True
    # self-conditioning (Liu et al. 2020): train a conditional network (model.conditional=true) on K
    # k-means clusters of the images instead of the data's labels, so it needs none; None = off
    pseudo_labels: int | None = None


@dataclass
class LossConfig:
    name: str = "bce"  # registry name: bce (non-saturating), hinge, lsgan, wgan (Wasserstein critic), rpgan
    gp_weight: float = 0.0  # WGAN-GP's lambda: weight of E[(|grad D(x_hat)| - 1)^2] on interpolates; 0 = off
    r1_weight: float = 0.0  # R1's gamma: weight of gamma/2 E[|grad D(x_real)|^2]; 0 = off
    r1_every: int = 1  # lazy R1 and R2: applied every r1_every-th D step, weighted by r1_every (StyleGAN2: 16)
    r2_weight: float = 0.0  # R2's gamma: weight of gamma/2 E[|grad D(G(z))|^2] on generated images; 0 = off
    # LeCam (Tseng et al. 2021): weight of E[relu(D(x) - a_fake)^2] + E[relu(a_real - D(G(z)))^2], a_real and
    # a_fake moving averages of D's mean outputs (decay lecam_decay per D step); 0 = off
    lecam_weight: float = 0.0
    lecam_decay: float = 0.99
    # top-k G updates (Sinha et al. 2020): G's loss takes only this fraction of its generated batch,
    # the images D scores as most real; 1 = all. Ramp it down with schedule.top_k (the paper: to 0.5)
    top_k: float = 1.0


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
    # G_ema by half-life instead (stylegan2-ada-pytorch): its weight halves every ema_kimg thousand images,
    # decay 0.5 ** (images per step / (ema_kimg * 1000)), with ema_rampup capping the half-life at that
    # fraction of the images seen; set ema_decay to null to use it. None = ema_decay decides
    ema_kimg: float | None = None
    num_samples: int = 64  # images in the fixed-noise sample grid
    on_nonfinite: str = "stop"  # non-finite loss: stop (exit non-zero) or skip (drop the update)
    max_nonfinite_skips: int = 10  # with on_nonfinite=skip: stop after this many skips in a row
    tf32: bool = True  # fp32 matmuls and convolutions in TF32 on NVIDIA GPUs (Ampere+); no effect on CPU
    # warm start: a run folder (its newest complete checkpoint) or a checkpoints/step-NNNNNNN folder whose
    # G, D and G_ema weights a new run starts from, at step 0 with fresh optimizers; read only when the
    # run folder has no checkpoint yet (a resume continues from its own). None = random initialisation
    init_from: str | None = None
    # torch.compile of G and D: none (eager), default, or reduce-overhead (CUDA graphs; on a CPU it compiles
    # as default, with a warning). Not with loss.gp_weight, r1_weight or r2_weight: torch.compile has no
    # double backward. Unmeasured on a GPU so far (docs/performance.md)
    compile: str = "none"


@dataclass
class TrackingConfig:
    # where the scalars, sample grids and the evaluator's numbers go besides the run folder's JSONL files:
    # wandb (set up by the wandb.* keys; wandb.mode=disabled or WANDB_MODE=disabled turn it off too),
    # tensorboard (event files in DIR/tensorboard/) or none. Only wandb reads the wandb.* keys
    backend: str = "wandb"


@dataclass
class WandbConfig:
    mode: str | None = None  # online, offline or disabled; None = online with an API key, else offline
    project: str = "gan"  # W&B project
    entity: str | None = None  # W&B entity (user or team); None = the account's default
    group: str | None = None  # run group; None = the preset's name
    tags: list[str] = field(default_factory=list)  # extra tags; the network and loss are always added
    name: str | None = None  # run name; None = the run folder's name
    # checkpoints as W&B artifacts (type model, one per run): none; best (the evaluator logs the checkpoint
    # best.json names, alias best); all (training logs each checkpoint, alias latest, and the evaluator the best)
    log_checkpoints: str = "none"


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
    # each transform is applied to each image with this probability (as ADA applies its pipeline)
    p: float = 1.0


@dataclass
class Ramp:
    shape: str = "constant"  # constant, linear or cosine (half a cosine), from the key's own value to `end`
    end: float | None = None  # the value at the horizon, held after it; needed by linear and cosine


@dataclass
class ScheduleConfig:
    """Values that change over training, each from its key's own value (the start) to its `end`."""

    # the horizon: the ramps run over the first `kimg` thousand images (G steps x batch x processes), then
    # hold their end; None = over train.steps
    kimg: float | None = None
    lr_g: Ramp = field(default_factory=Ramp)  # from optim.lr_g
    lr_d: Ramp = field(default_factory=Ramp)  # from optim.lr_d
    beta2: Ramp = field(default_factory=Ramp)  # Adam's beta2, from optim.betas[1], for G and D
    r1_weight: Ramp = field(default_factory=Ramp)  # from loss.r1_weight
    r2_weight: Ramp = field(default_factory=Ramp)  # from loss.r2_weight
    ema_kimg: Ramp = field(default_factory=Ramp)  # G_ema's half-life, from train.ema_kimg
    augment_p: Ramp = field(default_factory=Ramp)  # from augment.p
    top_k: Ramp = field(default_factory=Ramp)  # from loss.top_k


@dataclass
class Config:
    preset: str = "custom"  # the preset's name: the config file's stem unless set
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
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


class _Refused(GanError):
    """A value of the right type that no key accepts: a union reports it instead of trying its next type."""


def _coerce(value, tp, key: str):
    """Return value checked against the annotation tp; ints are accepted for floats."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(tp):
            try:
                return _coerce(value, option, key)
            except _Refused:
                raise
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
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if number or (isinstance(value, str) and SCIENTIFIC.fullmatch(value)):
            try:
                result = float(value)
            except OverflowError:  # an int of hundreds of digits
                result = math.inf
            if not math.isfinite(result):
                raise _Refused(f"{key}: expected a finite number, got {cut(str(value))}")
            return result
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and SCIENTIFIC.fullmatch(value):
            raise _Refused(
                f"{key}: expected int, got {cut(value)} (e-notation is a float; write the digits)"
            )
    elif tp is str:
        if isinstance(value, str):
            if len(value) <= MAX_STRING:
                return value
            raise _Refused(
                f"{key}: expected a string of at most {MAX_STRING} characters, got {quote(value)}"
            )
    elif isinstance(value, tp):
        return value
    raise GanError(f"{key}: expected {_type_name(tp)}, got {quote(value)}")


def _merge(obj, updates: dict, prefix: str = "") -> None:
    """Write the dict `updates` into the dataclass `obj`, strictly."""
    section = prefix.rstrip(".")
    if updates is None and section:  # `train:` with nothing under it
        raise GanError(f"section {section!r} is empty; give it keys or remove it")
    if not isinstance(updates, dict):
        raise GanError(f"{section or 'config'}: expected a mapping, got {quote(updates)}")
    fields = {f.name: f for f in dataclasses.fields(obj)}
    hints = typing.get_type_hints(type(obj))
    for name, value in updates.items():
        key = f"{prefix}{name}"
        if name not in fields:
            raise GanError(f"unknown config key {quote(key)}; legal keys here: {', '.join(fields)}")
        current = getattr(obj, name)
        if dataclasses.is_dataclass(current):
            _merge(current, value, prefix=f"{key}.")
        else:
            setattr(obj, name, _coerce(value, hints[name], key))


@contextlib.contextmanager
def _errors_from(source: str | None):
    """Prefix every GanError raised inside with source, e.g. "config file 'RUN/config.yaml'"."""
    try:
        yield
    except GanError as err:
        if source is None:
            raise
        raise GanError(f"{source}: {err}") from None


# --------------------------------------------------------------------------- parsing


class _TooDeep(Exception):
    """Raised inside PyYAML's composer; _parse_yaml turns it into a GanError naming the source."""


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing nesting deeper than MAX_DEPTH before it recurses into it."""

    depth = 0

    def compose_node(self, parent, index):
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise _TooDeep
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def _load(text: str):
    loader = _BoundedLoader(text)  # reads the whole text: a ReaderError on a character YAML does not allow
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def _check_shape(data, where: str) -> None:
    """Refuse nesting deeper than MAX_DEPTH and more than MAX_VALUES values, each alias counted where it
    is used: an alias shares one object, so the text can be small while a walk over it never ends."""
    stack, count = [(data, 1)], 0
    while stack:
        value, depth = stack.pop()
        count += 1
        if depth > MAX_DEPTH:
            raise GanError(f"{where} is nested more than {MAX_DEPTH} levels deep")
        if count > MAX_VALUES:
            raise GanError(f"{where} holds more than {MAX_VALUES} values (YAML aliases expanded)")
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list | tuple):
            stack.extend((v, depth + 1) for v in value)


def _parse_yaml(text: str, where: str):
    """YAML text -> data within the limits above; where ("config file 'F'") starts every error."""
    try:
        data = _load(text)
    except _TooDeep:
        raise GanError(f"{where} is nested more than {MAX_DEPTH} levels deep") from None
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark
        where_in = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        detail = f"{err.problem}{where_in}" if err.problem else str(err)
        raise GanError(f"{where} is not valid YAML: {detail}".splitlines()[0][:200]) from None
    except yaml.YAMLError as err:  # ReaderError: a character YAML does not allow
        raise GanError(f"{where} is not valid YAML: {err}".splitlines()[0][:200]) from None
    except ValueError as err:  # an int of more than 4300 digits, a date such as 2020-13-45
        raise GanError(f"{where} is not valid YAML: {str(err).split(';')[0]}"[:200]) from None
    _check_shape(data, where)
    return data


def parse_override(text: str) -> dict:
    """`train.steps=10` -> {"train": {"steps": 10}}; the value is parsed as YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise GanError(f"override {quote(text)} is not of the form key.sub=value")
    value = _parse_yaml(raw, f"override {quote(text)}: the value") if raw != "" else ""
    nested: dict = value
    for part in reversed(key.split(".")):
        nested = {part: nested}
    return nested


# --------------------------------------------------------------------------- loading


def read_yaml(path: Path) -> dict:
    """A config file's mapping of sections; {} for an empty file."""
    where = f"config file {str(path)!r}"
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise GanError(f"{where} does not exist") from None
    except OSError as err:
        raise GanError(f"{where} cannot be read: {err.strerror}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise GanError(f"{where} is larger than {MAX_FILE_BYTES >> 20} MiB: too large for a config")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        bad = f"byte 0x{raw[err.start]:02x} at offset {err.start}"
        raise GanError(f"{where} is not UTF-8 text ({bad})") from None
    data = _parse_yaml(text, where)
    if data is not None and not isinstance(data, dict):
        raise GanError(f"{where}: expected a mapping of sections (model:, data:, train:, ...), "
                       f"got a {type(data).__name__}")  # fmt: skip
    return data or {}


def from_dict(data: dict, source: str | None = None) -> Config:
    """A validated Config from stored data; source (e.g. "checkpoint 'P'") starts every error."""
    cfg = Config()
    with _errors_from(source):
        _check_shape(data, "the config")
        _merge(cfg, data)
        validate(cfg)
    return cfg


def read_config_file(path: str | Path) -> Config:
    """A stored config, e.g. a run folder's config.yaml, validated; every error names the file."""
    return from_dict(read_yaml(Path(path)), source=f"config file {str(path)!r}")


def load_config(path: str | Path | None, overrides: list[str] = ()) -> Config:
    """Defaults, then the preset file, then the overrides in order; validated."""
    cfg = Config()
    if path is not None:
        data = read_yaml(Path(path))
        data.setdefault("preset", Path(path).stem)
        with _errors_from(f"config file {str(path)!r}"):
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


# Upper bounds of the size keys: far above any published GAN, low enough that a slip (an extra zero,
# 1e10) is refused here, before the run folder exists, and not by an out-of-memory traceback later.
SIZE_LIMITS = {
    "model.z_dim": 4096,  # 8x StyleGAN's 512; G's first layer grows linearly with it
    "model.hidden_dim": 16384,  # the MLP's hidden layer has hidden_dim**2 weights: 268 M at the limit
    "model.g_channels": 1024,  # DCGAN's widest layer has 8x this: at 64 px, 0.5 G weights at the limit
    "model.d_channels": 1024,  # (16x DCGAN's 64, 4x SNGAN's 256)
    "model.g_extra_layers": 16,  # dcgan, per stage: SNGAN's CNN D has one 3x3 conv beside each stride-2 conv
    "model.d_extra_layers": 16,
    "model.d_mbstd_group": 64,  # 16x StyleGAN2's 4; a group is that many images of one process's batch
    # r3gan, each entry: 2.7x R3GAN's ImageNet width of 1536; a block's two 1x1 convs hold
    # 2 x expansion x width**2 weights: 67 M at the limit with expansion 2
    "model.widths": 4096,
    "model.blocks": 64,  # r3gan, each entry: 32x the paper's 2 per stage
    "model.expansion": 16,  # r3gan: 8x the paper's 2; the inner 1x1 convs grow linearly with it
    "model.group_size": 4096,  # r3gan: 256x the paper's 16; a grouped 3x3 conv has inner width x 9 x this
    "data.resolution": 1024,  # StyleGAN's largest; the networks accept only some sizes up to it
    "train.batch_size": 8192,  # images per process: 4x BigGAN's 2048
    "train.n_critic": 100,  # WGAN's warm-up phase, the most D steps per G step in the literature
    # the fixed-noise grid: 32 x 32 images, the most that stay legible in one PNG. Every process keeps
    # the noise and G renders the whole grid at each sample_every.
    "train.num_samples": 1024,
}
TRACKING_BACKENDS = ("wandb", "tensorboard", "none")  # gan.trackers
COMPILE_MODES = ("none", "default", "reduce-overhead")  # train.compile: torch.compile's modes, or eager
SEED_MAX = 2**31 - 1  # numpy's seeds are < 2**32 and each process adds its rank: room for any count
WANDB_TAG_CHARS = 64  # W&B refuses a tag that is empty or longer, when the run is already created


def _one_of(key: str, value, choices: tuple, nullable: bool = False) -> None:
    legal = ", ".join(choices) + (" (or null)" if nullable else "")
    ok = value in choices or (nullable and value is None)
    _check(ok, f"{key}: unknown value {quote(value)}; choose one of: {legal}")


def _positive(cfg: Config, *keys: str) -> None:
    flat = flatten(to_dict(cfg))
    for key in keys:
        value = flat[key]
        _check(value is None or value > 0, f"{key} must be > 0, got {value!r}")
        limit = SIZE_LIMITS.get(key)
        _check(limit is None or value <= limit, f"{key} must be in [1, {limit}], got {value!r}")


def validate(cfg: Config) -> None:
    """Ranges and enums; network/data compatibility is checked where the network is built.

    The registry names are read from the plugin packages' folders: nothing here imports torch."""
    NETWORKS.check(cfg.model.network, "model.network")
    LOSSES.check(cfg.loss.name, "loss.name")
    DATASETS.check(cfg.data.name, "data.name")
    _positive(
        cfg,
        "model.z_dim", "model.hidden_dim", "model.g_channels", "model.d_channels",
        "data.resolution", "data.limit", "optim.lr_g", "optim.lr_d",
        "train.steps", "train.batch_size", "train.checkpoint_every", "train.sample_every",
        "train.n_critic", "loss.r1_every", "train.log_every", "train.keep_checkpoints", "train.num_samples",
        "train.max_nonfinite_skips", "model.expansion", "model.group_size",
    )  # fmt: skip
    _validate_stages(cfg)
    _validate_extra_layers(cfg)
    _validate_mbstd(cfg)
    _check(cfg.data.channels in (1, 3), f"data.channels must be 1 or 3, got {cfg.data.channels}")
    _check(
        len(cfg.optim.betas) == 2 and all(0 <= b < 1 for b in cfg.optim.betas),
        f"optim.betas must be two numbers in [0, 1), got {quote(cfg.optim.betas)}",
    )
    seed = cfg.train.seed
    _check(0 <= seed <= SEED_MAX, f"train.seed must be in [0, {SEED_MAX}], got {seed}")
    _validate_family(cfg)
    decay = cfg.train.ema_decay
    _check(decay is None or 0 < decay < 1, f"train.ema_decay must be in (0, 1) or null, got {decay}")
    rampup = cfg.train.ema_rampup
    _check(rampup is None or rampup > 0, f"train.ema_rampup must be > 0 or null, got {rampup}")
    half_life = cfg.train.ema_kimg
    _check(half_life is None or half_life >= 0, f"train.ema_kimg must be >= 0 or null, got {half_life}")
    _check(half_life is None or decay is None,
           "train.ema_kimg and train.ema_decay both set: G_ema takes one of them; set the other to null")  # fmt: skip
    _validate_schedule(cfg)
    k = cfg.data.pseudo_labels
    _check(k is None or 2 <= k <= MAX_PSEUDO_LABELS,
           f"data.pseudo_labels must be in [2, {MAX_PSEUDO_LABELS}] or null, got {k}")  # fmt: skip
    _check(k is None or cfg.model.conditional,
           f"data.pseudo_labels={k} trains a conditional network on clusters: set model.conditional=true")  # fmt: skip
    _one_of("train.on_nonfinite", cfg.train.on_nonfinite, ("stop", "skip"))
    _one_of("train.compile", cfg.train.compile, COMPILE_MODES)
    ramped = (cfg.schedule.r1_weight.end or 0) > 0 or (cfg.schedule.r2_weight.end or 0) > 0
    penalised = cfg.loss.gp_weight > 0 or cfg.loss.r1_weight > 0 or cfg.loss.r2_weight > 0 or ramped
    _check(cfg.train.compile == "none" or not penalised,
           f"train.compile={cfg.train.compile} with loss.gp_weight, loss.r1_weight or loss.r2_weight: the penalties "
           "differentiate D's input gradients, and torch.compile has no double backward; set train.compile=none")  # fmt: skip
    _one_of("wandb.mode", cfg.wandb.mode, ("online", "offline", "disabled"), nullable=True)
    _one_of("wandb.log_checkpoints", cfg.wandb.log_checkpoints, ("none", "best", "all"))
    _one_of("tracking.backend", cfg.tracking.backend, TRACKING_BACKENDS)
    _check(cfg.wandb.log_checkpoints == "none" or cfg.tracking.backend == "wandb",
           f"wandb.log_checkpoints={cfg.wandb.log_checkpoints} logs W&B artifacts, and tracking.backend is "
           f"{cfg.tracking.backend}: set tracking.backend=wandb or wandb.log_checkpoints=none")  # fmt: skip
    for i, tag in enumerate(cfg.wandb.tags):
        _check(
            1 <= len(tag) <= WANDB_TAG_CHARS,
            f"wandb.tags[{i}]: W&B tags are 1 to {WANDB_TAG_CHARS} characters, got {quote(tag)}",
        )


# schedule key -> (the key its ramp starts from, the legal values, said in words)
SCHEDULED = {
    "lr_g": ("optim.lr_g", lambda v: v > 0, "> 0"),
    "lr_d": ("optim.lr_d", lambda v: v > 0, "> 0"),
    "beta2": ("optim.betas[1]", lambda v: 0 <= v < 1, "in [0, 1)"),
    "r1_weight": ("loss.r1_weight", lambda v: v >= 0, ">= 0"),
    "r2_weight": ("loss.r2_weight", lambda v: v >= 0, ">= 0"),
    "ema_kimg": ("train.ema_kimg", lambda v: v >= 0, ">= 0"),
    "augment_p": ("augment.p", lambda v: 0 <= v <= 1, "in [0, 1]"),
    "top_k": ("loss.top_k", lambda v: 0 < v <= 1, "in (0, 1]"),
}
SCHEDULE_SHAPES = ("constant", "linear", "cosine")


def _validate_schedule(cfg: Config) -> None:
    p = cfg.augment.p
    _check(0 <= p <= 1, f"augment.p must be in [0, 1], got {p}")
    horizon = cfg.schedule.kimg
    _check(horizon is None or horizon > 0, f"schedule.kimg must be > 0 or null, got {horizon}")
    for name, (start_key, legal, text) in SCHEDULED.items():
        ramp = getattr(cfg.schedule, name)
        _one_of(f"schedule.{name}.shape", ramp.shape, SCHEDULE_SHAPES)
        if ramp.shape == "constant":
            _check(ramp.end is None, f"schedule.{name}.end is set but schedule.{name}.shape is constant: "
                                     "choose linear or cosine, or remove end")  # fmt: skip
            continue
        _check(ramp.end is not None, f"schedule.{name}.shape={ramp.shape} needs schedule.{name}.end, the value "
                                     f"it reaches from {start_key}")  # fmt: skip
        _check(legal(ramp.end), f"schedule.{name}.end must be {text}, got {ramp.end}")
    _check(cfg.schedule.ema_kimg.shape == "constant" or cfg.train.ema_kimg is not None,
           "schedule.ema_kimg ramps G_ema's half-life from train.ema_kimg: set train.ema_kimg (e.g. 0)")  # fmt: skip


def _validate_stages(cfg: Config) -> None:
    """model.widths and model.blocks, entry by entry; their count per resolution is the network's to check."""
    widths, blocks = cfg.model.widths, cfg.model.blocks
    top = SIZE_LIMITS["model.widths"]
    _check(
        widths is None or (len(widths) > 0 and all(1 <= w <= top for w in widths)),
        f"model.widths must be null or a non-empty list of ints in [1, {top}], got {quote(widths)}",
    )
    top = SIZE_LIMITS["model.blocks"]
    entries = blocks if isinstance(blocks, list) else [blocks]
    _check(
        len(entries) > 0 and all(0 <= b <= top for b in entries),
        f"model.blocks must be an int in [0, {top}] or a non-empty list of them, got {quote(blocks)}",
    )


def _validate_extra_layers(cfg: Config) -> None:
    """model.g_extra_layers and model.d_extra_layers: counts in [0, limit], for the dcgan family only."""
    for key in ("g_extra_layers", "d_extra_layers"):
        value, top = getattr(cfg.model, key), SIZE_LIMITS[f"model.{key}"]
        _check(0 <= value <= top, f"model.{key} must be in [0, {top}], got {value}")
        _dcgan_only(cfg, key)


def _dcgan_only(cfg: Config, key: str) -> None:
    """A model key that only the dcgan family reads must be 0 for the others."""
    value = getattr(cfg.model, key)
    _check(value == 0 or cfg.model.network == "dcgan",
           f"model.{key}={value} applies to model.network=dcgan only, not {cfg.model.network}; set it to 0")  # fmt: skip


def _validate_mbstd(cfg: Config) -> None:
    """model.d_mbstd_group: 0, or a group size that divides train.batch_size, for the dcgan family only."""
    group, top, batch = cfg.model.d_mbstd_group, SIZE_LIMITS["model.d_mbstd_group"], cfg.train.batch_size
    _check(group == 0 or 2 <= group <= top, f"model.d_mbstd_group must be 0 (off) or in [2, {top}], got {group}")
    _dcgan_only(cfg, "d_mbstd_group")
    _check(group == 0 or batch % group == 0,
           f"model.d_mbstd_group={group} must divide train.batch_size={batch}: D groups the images of each batch")  # fmt: skip


def _validate_family(cfg: Config) -> None:
    """The keys of the GAN family: penalties, D's normalisation, augmentations."""
    for key in ("gp_weight", "r1_weight", "r2_weight", "lecam_weight"):
        value = getattr(cfg.loss, key)
        _check(value >= 0, f"loss.{key} must be >= 0, got {value}")
    _check(0 <= cfg.loss.lecam_decay < 1, f"loss.lecam_decay must be in [0, 1), got {cfg.loss.lecam_decay}")
    constrained = cfg.loss.gp_weight > 0 or cfg.loss.r1_weight > 0 or cfg.loss.r2_weight > 0 or cfg.model.spectral_norm
    _check(
        cfg.loss.name != "wgan" or constrained,
        "loss.name=wgan needs a constraint on D: set loss.gp_weight (WGAN-GP: 10), loss.r1_weight "
        "or model.spectral_norm=true",
    )
    top_k = cfg.loss.top_k
    _check(0 < top_k <= 1, f"loss.top_k must be in (0, 1], got {top_k}")
    _check(cfg.loss.name != "rpgan" or (top_k == 1 and cfg.schedule.top_k.shape == "constant"),
           "loss.top_k with loss.name=rpgan: the relativistic loss pairs every generated image with a real one; "
           "use top_k with bce, hinge, lsgan or wgan")  # fmt: skip
    _one_of("model.d_norm", cfg.model.d_norm, ("batch", "layer", "none"), nullable=True)
    for name in cfg.augment.policy:
        AUGMENTATIONS.check(name, "augment.policy")
    _check(
        len(set(cfg.augment.policy)) == len(cfg.augment.policy),
        f"augment.policy lists a transform twice: {quote(cfg.augment.policy)}",
    )

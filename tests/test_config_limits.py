"""Hostile and absurd config input, in-process: one short GanError naming the key or file, never a traceback.

Each case is what a typo, a wrong file or a crafted YAML gives: bytes that are not UTF-8, an alias
bomb, deep nesting, numbers out of every sane range, non-finite floats, and sections left empty.
"""

import math
import time
from pathlib import Path

import pytest
import yaml

from gan.config import (
    MAX_DEPTH,
    Config,
    from_dict,
    load_config,
    parse_override,
    read_config_file,
    read_yaml,
    to_dict,
    to_yaml,
)
from gan.errors import GanError

LONGEST_ERROR = 400  # characters: an error line quotes a user value in at most ~80


def error_of(call, *args) -> str:
    """The GanError message of call(*args); fails the test on any other outcome."""
    with pytest.raises(GanError) as info:
        call(*args)
    message = str(info.value)
    assert "\n" not in message and len(message) <= LONGEST_ERROR, message[:1000]
    return message


def alias_bomb(levels: int) -> str:
    """A flow-style YAML list whose last item expands to 9**levels strings ("billion laughs" at 9)."""
    names = "abcdefghij"
    lists = ["&a [x,x,x,x,x,x,x,x,x]"]
    lists += [f"&{names[i + 1]} [" + ",".join([f"*{names[i]}"] * 9) + "]" for i in range(levels - 1)]
    return "[" + ", ".join(lists) + f", *{names[levels - 1]}]"


def deep_list(depth: int) -> str:
    return "[" * depth + "1" + "]" * depth


# --------------------------------------------------------------------------- files


def test_config_file_that_is_not_utf8(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("# Größe\ntrain:\n  steps: 5\n".encode("latin-1"))
    message = error_of(load_config, path)
    assert message.startswith(f"config file {str(path)!r} is not UTF-8 text"), message


def test_binary_junk_file(tmp_path):
    path = tmp_path / "junk.yaml"
    path.write_bytes(bytes(range(256)) * 4)
    assert error_of(read_yaml, path).startswith(f"config file {str(path)!r}")


def test_binary_junk_that_is_utf8(tmp_path):
    path = tmp_path / "nul.yaml"
    path.write_bytes(b"train:\n  steps: \x00\x01\x02\n")
    assert "is not valid YAML" in error_of(read_yaml, path)


def test_file_far_larger_than_a_config(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text("# padding\n" * 200_000 + "train:\n  steps: 5\n")  # 2 MB, valid YAML
    message = error_of(load_config, path)
    assert f"config file {str(path)!r} is larger than" in message, message


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="no /dev/zero")
def test_endless_file():
    assert (
        error_of(read_yaml, Path("/dev/zero"))
        == "config file '/dev/zero' is larger than 1 MiB: too large for a config"
    )


@pytest.mark.parametrize("where", ["file", "override"])
def test_alias_bomb_is_refused_quickly(tmp_path, where):
    """9**9 strings if expanded: the error neither expands nor walks the structure."""
    start = time.monotonic()
    if where == "file":
        path = tmp_path / "bomb.yaml"
        path.write_text(f"train:\n  steps: {alias_bomb(9)}\n")
        message = error_of(load_config, path)
        assert str(path) in message
    else:
        message = error_of(load_config, None, [f"train.steps={alias_bomb(9)}"])
    assert time.monotonic() - start < 5
    assert "is nested more than 8 levels deep" in message, message


@pytest.mark.parametrize(
    "key", ["wandb.tags", "augment.policy", "optim.betas", "wandb.name", "train.ema_decay"]
)
def test_alias_bomb_where_a_list_or_union_is_legal(key):
    start = time.monotonic()
    error_of(load_config, None, [f"{key}={alias_bomb(9)}"])
    assert time.monotonic() - start < 5


def test_wide_alias_bomb_is_counted():
    """Shallow but wide: 200 uses of a 100-item list, 20,000 strings in a 1 KB override."""
    value = "[&a [" + ",".join(["x"] * 100) + "], " + ", ".join(["*a"] * 200) + "]"
    message = error_of(load_config, None, [f"wandb.tags={value}"])
    assert message.startswith("override 'wandb.tags=[&a [x,x") and "holds more than 10000 values" in message


def test_error_quotes_a_long_value_in_short():
    value = "[" + ", ".join(str(i) for i in range(5000)) + "]"
    message = error_of(load_config, None, [f"train.steps={value}"])
    assert message.startswith("train.steps: expected int, got [0, 1, 2"), message
    assert len(message) < 150


@pytest.mark.parametrize("where", ["file", "override"])
def test_deep_nesting(tmp_path, where):
    if where == "file":
        path = tmp_path / "deep.yaml"
        path.write_text(f"train:\n  steps: {deep_list(5000)}\n")
        message = error_of(load_config, path)
        assert message.startswith(f"config file {str(path)!r}"), message
    else:
        message = error_of(load_config, None, [f"train.steps={deep_list(5000)}"])
        assert message.startswith("override 'train.steps=[[[["), message
    assert f"nested more than {MAX_DEPTH} levels deep" in message, message


def test_nesting_through_aliases_is_bounded():
    """Each alias adds the depth of what it names: 40 x 30 levels, while the text is 30 deep."""
    names = [f"n{i}" for i in range(40)]
    items = [f"&{names[0]} {deep_list(30)}"]
    items += [f"&{names[i]} " + "[" * 29 + f"*{names[i - 1]}" + "]" * 29 for i in range(1, 40)]
    message = error_of(load_config, None, ["train.steps=[" + ", ".join(items) + "]"])
    assert "nested more than" in message, message


def test_self_referencing_value():
    assert "nested more than" in error_of(parse_override, "wandb.tags=&a [*a]")


def test_number_with_thousands_of_digits():
    message = error_of(load_config, None, ["train.steps=" + "1" * 5000])
    assert message.startswith("override 'train.steps=1111"), message


# --------------------------------------------------------------------------- overrides


def test_huge_string_value():
    message = error_of(load_config, None, ["data.root=" + "x" * 100_000])
    assert message.startswith("data.root: expected a string of at most 4096 characters, got 'xxx"), message


def test_key_with_many_dots():
    message = error_of(load_config, None, ["train.steps" + "." * 100_000 + "=1"])
    assert message.startswith("train.steps: expected int"), message
    assert error_of(load_config, None, ["." * 100_000 + "=1"]).startswith("unknown config key ''")


def test_override_that_is_binary_junk():
    junk = bytes(range(1, 256)).decode("utf-8", errors="surrogateescape")  # how argv arrives
    assert error_of(parse_override, f"train.steps={junk}").startswith("override 'train.steps=")
    assert error_of(load_config, None, [junk]).startswith("override ")


# --------------------------------------------------------------------------- numbers


@pytest.mark.parametrize(
    "override, message",
    [
        ("optim.lr_g=.inf", "optim.lr_g: expected a finite number, got inf"),
        ("optim.lr_d=.nan", "optim.lr_d: expected a finite number, got nan"),
        ("loss.gp_weight=.inf", "loss.gp_weight: expected a finite number, got inf"),
        ("loss.r1_weight=-.inf", "loss.r1_weight: expected a finite number, got -inf"),
        ("optim.lr_g=1e999", "optim.lr_g: expected a finite number, got 1e999"),
        ("train.ema_decay=.nan", "train.ema_decay: expected a finite number, got nan"),
        ("train.ema_rampup=.inf", "train.ema_rampup: expected a finite number, got inf"),
        ("optim.betas=[0.5, .nan]", "optim.betas[1]: expected a finite number, got nan"),
        ("optim.lr_g=1" + "0" * 400, "optim.lr_g: expected a finite number, got 100000"),
    ],
)
def test_non_finite_floats(override, message):
    assert error_of(load_config, None, [override]).startswith(message)


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.seed=4294967296", "train.seed must be in [0, 2147483647], got 4294967296"),
        ("train.seed=2147483648", "train.seed must be in [0, 2147483647], got 2147483648"),
        ("train.seed=-1", "train.seed must be in [0, 2147483647], got -1"),
        ("model.z_dim=10000000000", "model.z_dim must be in [1, 4096], got 10000000000"),
        ("model.hidden_dim=100000", "model.hidden_dim must be in [1, 16384], got 100000"),
        ("model.g_channels=4096", "model.g_channels must be in [1, 1024], got 4096"),
        ("model.d_channels=4096", "model.d_channels must be in [1, 1024], got 4096"),
        ("data.resolution=4096", "data.resolution must be in [1, 1024], got 4096"),
        ("train.batch_size=100000", "train.batch_size must be in [1, 8192], got 100000"),
        ("train.num_samples=1000000000", "train.num_samples must be in [1, 1024], got 1000000000"),
        ("train.n_critic=1000", "train.n_critic must be in [1, 100], got 1000"),
        ("wandb.tags=[ok, '']", "wandb.tags[1]: W&B tags are 1 to 64 characters, got ''"),
    ],
)
def test_out_of_range(override, message):
    assert error_of(load_config, None, [override]) == message


def test_largest_legal_values_are_accepted():
    largest = ["train.seed=2147483647", "model.z_dim=4096", "train.num_samples=1024", "train.batch_size=8192",
               "train.n_critic=100", "wandb.tags=[" + "t" * 64 + "]"]  # fmt: skip
    cfg = load_config(None, largest)
    assert cfg.train.seed == 2**31 - 1 and cfg.model.z_dim == 4096


@pytest.mark.parametrize("value", ["1e10", "1E10", "2.5e3", "1.0e10", "1e+10"])
def test_e_notation_for_an_int(value):
    message = error_of(load_config, None, [f"model.z_dim={value}"])
    assert message.startswith(f"model.z_dim: expected int, got {value} (e-notation is a float"), message


# --------------------------------------------------------------------------- naming the file


def stored(tmp_path, edit) -> Path:
    """A run folder's config.yaml as training writes it, then edited."""
    data = to_dict(load_config("configs/dcgan_mnist.yaml"))
    edit(data)
    path = tmp_path / "run" / "config.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_stored_config_reads_back(tmp_path):
    cfg = load_config("configs/dcgan_mnist.yaml", ["train.steps=7"])
    (tmp_path / "config.yaml").write_text(to_yaml(cfg))
    assert read_config_file(tmp_path / "config.yaml") == cfg


def test_stored_config_with_an_unknown_key_names_the_file(tmp_path):
    path = stored(tmp_path, lambda d: d["train"].update(stepz=3))
    message = error_of(read_config_file, path)
    assert message.startswith(f"config file {str(path)!r}: unknown config key 'train.stepz'"), message


def test_stored_config_with_an_empty_section_names_the_file(tmp_path):
    path = stored(tmp_path, lambda d: d.update(train=None))
    message = error_of(read_config_file, path)
    assert message == f"config file {str(path)!r}: section 'train' is empty; give it keys or remove it"


def test_stored_config_out_of_range_names_the_file(tmp_path):
    path = stored(tmp_path, lambda d: d["train"].update(num_samples=10**9))
    message = error_of(read_config_file, path)
    assert message == f"config file {str(path)!r}: train.num_samples must be in [1, 1024], got 1000000000"


def test_stored_config_that_is_not_utf8(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_bytes(b"train:\n  steps: 5 # \xff\xfe\n")
    assert error_of(read_config_file, path).startswith(f"config file {str(path)!r} is not UTF-8 text")


def test_run_folder_uses_the_file_naming_reader(tmp_path):
    """gan.run_folder.stored_config is the resume path: its errors name RUN/config.yaml too."""
    from gan.run_folder import stored_config

    path = stored(tmp_path, lambda d: d["model"].update(z_dimm=3))
    assert error_of(stored_config, path.parent).startswith(f"config file {str(path)!r}: unknown config key")


def test_preset_with_an_empty_section_names_the_file(tmp_path):
    path = tmp_path / "preset.yaml"
    path.write_text("model:\n  network: dcgan\ntrain:\n  # steps: 5\n")
    message = error_of(load_config, path)
    assert message == f"config file {str(path)!r}: section 'train' is empty; give it keys or remove it"


def test_preset_with_an_unknown_key_names_the_file(tmp_path):
    path = tmp_path / "preset.yaml"
    path.write_text("train:\n  stepz: 5\n")
    assert error_of(load_config, path).startswith(
        f"config file {str(path)!r}: unknown config key 'train.stepz'"
    )


# --------------------------------------------------------------------------- round trip


def test_to_yaml_round_trips_awkward_values():
    cfg = load_config(None, ["wandb.name='1e10'", "wandb.group='null'", "wandb.tags=['yes', '0x10', 'a: b']",
                             "data.root='~/data # not a comment'", "optim.lr_g=1e-10", "train.ema_decay=null",
                             "train.seed=2147483647", "preset=''"])  # fmt: skip
    again = from_dict(yaml.safe_load(to_yaml(cfg)))
    assert again == cfg and to_dict(again) == to_dict(cfg)
    assert again.wandb.name == "1e10" and again.optim.lr_g == 1e-10 and not math.isnan(again.optim.lr_d)


def test_defaults_round_trip():
    assert from_dict(yaml.safe_load(to_yaml(Config()))) == Config()

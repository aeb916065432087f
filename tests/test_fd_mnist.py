"""fd_mnist: the Fréchet distance in the penultimate features of the small MNIST classifier. Its shipped
weights (pinned by sha256, accurate on the held-out digits), its numbers on real digits against
torch-fidelity's on the classifier run by hand, and `evaluate.py --metrics fid,fd_mnist` on the tiny
run, which refuses runs of other image shapes. The classifier reads thousands of digits a second here,
so the in-process sets are larger than Inception's.
"""

import json
import math
import re
import shutil

import pytest
import torch
import yaml
from accelerate import PartialState
from helpers import assert_user_error, evaluate_offline, snapshot

from gan.config import Config
from gan.data import as_tensor, build_data, to_float
from gan.errors import GanError
from gan.evaluation.features import create_extractor, image_features
from gan.evaluation.inception import EXTRACTOR
from gan.evaluation.metrics import (
    DEFAULT_METRICS,
    MetricSettings,
    by_extractor,
    compute_metrics,
    feature_layers,
)
from gan.evaluation.mnist_classifier import (
    FEATURES,
    NAME,
    WEIGHTS,
    WEIGHTS_SHA256,
    MnistClassifier,
    file_sha256,
    held_out,
    load_weights,
)
from gan.evaluation.real_stats import real_stats

N = 500  # digits per set: half the held-out digits
LAYER = str(FEATURES)
SMALL = ["--num-samples", "16", "--num-real", "16", "--kid-subset-size", "8", "--batch-size", "16"]


@pytest.fixture(scope="module")
def state():
    return PartialState(cpu=True)


@pytest.fixture(scope="module")
def extractor():
    return create_extractor(None, [LAYER, "logits"], torch.device("cpu"), name=NAME)


@pytest.fixture(scope="module")
def data():
    return build_data(Config())


def settings(metrics=("fd_mnist",)) -> MetricSettings:
    return MetricSettings(metrics=metrics, num_samples=N, num_real=N, seed=0, kid_subset_size=8, weights="t")


# --------------------------------------------------------------------------- the classifier


def test_the_shipped_weights_are_pinned_and_classify_the_held_out_digits(extractor, data, state):
    assert file_sha256(WEIGHTS) == WEIGHTS_SHA256
    test = held_out(data.labels)
    assert test.sum() == 1000 and data.labels[test].bincount().tolist() == [100] * 10
    logits = image_features(extractor, as_tensor(data.images)[test], 250, state)["logits"]  # fed as the evaluator does
    accuracy = (logits.argmax(1) == data.labels[test]).float().mean().item()
    print(f"held-out accuracy of the MNIST classifier: {accuracy:.4f} (1000 digits)")
    assert accuracy > 0.9


def test_changed_weights_are_refused_naming_the_file(tmp_path):
    from torch_fidelity.utils import create_feature_extractor

    changed = tmp_path / "mnist_classifier.safetensors"
    content = bytearray(WEIGHTS.read_bytes())
    content[-1] ^= 1  # one bit of the last tensor
    changed.write_bytes(bytes(content))
    with pytest.raises(GanError, match=rf"^MNIST classifier weights '{re.escape(str(changed))}' have sha256 "):
        create_feature_extractor(NAME, [LAYER], cuda=False, feature_extractor_weights_path=str(changed))


# --------------------------------------------------------------------------- the numbers


def test_fd_mnist_is_opt_in_reads_its_own_extractor_and_keys_its_weights():
    assert "fd_mnist" not in DEFAULT_METRICS
    layers = feature_layers(("fid", "kid", "fd_mnist"), EXTRACTOR)
    assert by_extractor(layers, EXTRACTOR) == {EXTRACTOR: {"fid": "2048", "kid": "2048"}, NAME: {"fd_mnist": LAYER}}
    assert settings(("fid", "fd_mnist")).as_dict()["fd_mnist_weights"] == WEIGHTS_SHA256
    assert "fd_mnist_weights" not in settings(("fid", "kid", "is")).as_dict()  # other runs keep their key


@pytest.fixture(scope="module")
def digit_sets(data):
    """Two disjoint sets of N held-out digits (50 of each class), and the first shifted by 3 px and with
    Gaussian noise (sd 64)."""
    images = as_tensor(data.images)[held_out(data.labels)]
    first, other = images[0::2], images[1::2]
    noise = torch.randn(first.shape, generator=torch.Generator().manual_seed(0)) * 64
    noised = (first.float() + noise).round().clamp(0, 255).to(torch.uint8)
    return {"first": first, "other": other, "shifted": torch.roll(first, 3, dims=3), "noised": noised}


@pytest.fixture(scope="module")
def fd_to_first(digit_sets, extractor, state, tmp_path_factory):
    """fd_mnist of each set against the first, its real statistics made as the evaluator makes them (cached)."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("GAN_CACHE_DIR", str(tmp_path_factory.mktemp("fd-cache")))
        real = real_stats(Config(), digit_sets["first"], "first-N", extractor, extractor.weights_tag, LAYER, 64, state)
    layers = feature_layers(("fd_mnist",), EXTRACTOR)
    fd = {}
    for name, images in digit_sets.items():
        fake = image_features(extractor, images, 64, state)
        fd[name] = compute_metrics(fake, real, settings(), layers)["fd_mnist"]
    return fd


def test_fd_mnist_of_digits_with_themselves_is_zero_and_of_distorted_ones_large(fd_to_first):
    fd = fd_to_first
    print({name: round(value, 4) for name, value in fd.items()})
    assert abs(fd["first"]) < 1e-3 * fd["other"]
    # A shift or noise moves the digits far further than drawing other real digits does.
    assert fd["shifted"] > 3 * fd["other"] and fd["noised"] > 3 * fd["other"]


def test_fd_mnist_is_torch_fidelitys_frechet_distance_of_the_classifier_by_hand(digit_sets, fd_to_first):
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_features_to_statistics, fid_statistics_to_metric

    model = MnistClassifier()
    model.load_state_dict(load_weights())
    model.eval()
    with torch.no_grad():  # one channel, one batch: not the evaluator's path
        other, first = (model(to_float(digit_sets[k]))[0] for k in ("other", "first"))
    theirs = fid_statistics_to_metric(fid_features_to_statistics(other), fid_features_to_statistics(first),
                                      verbose=False)[KEY_METRIC_FID]  # fmt: skip
    assert fd_to_first["other"] == pytest.approx(theirs, rel=1e-5) and theirs > 0


# --------------------------------------------------------------------------- evaluate.py


def records(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_evaluate_gives_fd_mnist_beside_fid_and_a_second_call_evaluates_nothing(dcgan_run, cache, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(dcgan_run, run_dir)
    evaluate_offline(cache, run_dir, "--metrics", "fid,fd_mnist", *SMALL)
    rows = records(run_dir)
    assert [r["step"] for r in rows] == [3, 6]
    for r in rows:
        assert math.isfinite(r["fd_mnist"]) and r["fd_mnist"] > 0 and r["fid"] > 0 and r["kid_mean"] is None
        assert r["settings"]["fd_mnist_weights"] == WEIGHTS_SHA256
    # The classifier's real statistics have a file of their own beside Inception's.
    assert len(list((cache / "real-stats").glob(f"mnist5k-28px-1ch-16-{NAME}-*.safetensors"))) == 1
    assert len(list((cache / "real-stats").glob(f"mnist5k-28px-1ch-16-{EXTRACTOR}-*.safetensors"))) == 1

    before, cached = snapshot(run_dir), snapshot(cache / "real-stats")
    second = evaluate_offline(cache, run_dir, "--metrics", "fid,fd_mnist", *SMALL)
    assert "nothing new to evaluate: 2 checkpoint(s)" in second.stdout
    assert snapshot(run_dir) == before and snapshot(cache / "real-stats") == cached


@pytest.mark.parametrize(("key", "value"), [("channels", 3), ("resolution", 32)])
def test_a_run_of_other_images_is_refused_in_one_line(dcgan_run, cache, tmp_path, key, value):
    run_dir = tmp_path / "run"
    shutil.copytree(dcgan_run, run_dir)
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    config["data"][key] = value  # refused from config.yaml, before a checkpoint or weights file is read
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    before = snapshot(run_dir)
    proc = evaluate_offline(cache, run_dir, "--metrics", "fid,fd_mnist", *SMALL, check=False)
    assert_user_error(proc, "--metrics fd_mnist", f"data.{key}={value}")
    assert snapshot(run_dir) == before

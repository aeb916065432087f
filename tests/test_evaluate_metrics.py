"""The evaluator's numbers against references: itself, torch-fidelity's calculate_metrics, the TorchScript
Inception, a hand-computed IS. Inception runs at ~10 images/s here, so each set is 16 MNIST digits.
"""

import socket
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from accelerate import PartialState
from PIL import Image

from gan.config import Config
from gan.data import as_tensor, build_data
from gan.errors import GanError
from gan.evaluation import inception
from gan.evaluation.features import create_extractor, image_features
from gan.evaluation.metrics import MetricSettings, compute_metrics, feature_layers
from gan.evaluation.real_stats import RealStats

N = 16  # images per set
STAND_IN = "stand-in-classifier"


def shared_cache(tmp_path_factory) -> Path:
    """The same folder as tests/test_evaluate.py uses: the Inception weights are converted once per session."""
    return tmp_path_factory.getbasetemp() / "gan-cache"


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    with pytest.MonkeyPatch.context() as env:
        env.setenv("GAN_CACHE_DIR", str(shared_cache(tmp_path_factory)))
        yield inception.converted_weights(note="tests")


@pytest.fixture(scope="module")
def state():
    return PartialState(cpu=True)


@pytest.fixture(scope="module")
def extractor(weights):
    return create_extractor(weights, ["2048"], torch.device("cpu"))


@pytest.fixture(scope="module")
def digits():
    """Two disjoint sets of real digits, uint8 (N, 1, 28, 28)."""
    images = as_tensor(build_data(Config()).images)
    return images[:N], images[N : 2 * N]


@pytest.fixture(scope="module")
def features(digits, extractor, state):
    """'2048' features of both sets, batch size N."""
    return [image_features(extractor, images, N, state)["2048"] for images in digits]


def as_real(features: torch.Tensor) -> RealStats:
    from torch_fidelity.metric_fid import fid_features_to_statistics

    stats = fid_features_to_statistics(features)
    return RealStats(features, stats["mu"], stats["sigma"], "2048", Path("-"), False)


def settings(metrics, **kw) -> MetricSettings:
    return MetricSettings(metrics=metrics, num_samples=N, num_real=N, seed=0, kid_subset_size=8, weights="t", **kw)


def fid(fake: torch.Tensor, real: torch.Tensor) -> float:
    return compute_metrics({"2048": fake}, as_real(real), settings(("fid",)), {"fid": "2048"})["fid"]


@pytest.fixture(scope="module")
def ours(features):
    """Our FID, KID, precision and recall of the second set against the first (each FID costs seconds:
    computed once)."""
    layers = feature_layers(("fid", "kid", "prc"), "inception-v3-compat")
    return compute_metrics({"2048": features[1]}, as_real(features[0]), settings(("fid", "kid", "prc")), layers)


def test_fid_of_a_set_with_itself_is_about_zero_and_a_shifted_set_is_far(digits, features, extractor, state):
    shifted = torch.roll(digits[0], shifts=(4, 4), dims=(2, 3))
    shifted_fid = fid(image_features(extractor, shifted, N, state)["2048"], features[0])
    assert shifted_fid > 10
    assert abs(fid(features[0], features[0])) < 1e-3 * shifted_fid


def test_fid_kid_and_prc_equal_calculate_metrics_on_the_same_folders(tmp_path, digits, ours, weights):
    from torch_fidelity import calculate_metrics

    folders = []
    for name, images in zip(("real", "fake"), digits, strict=True):
        folder = tmp_path / name
        folder.mkdir()
        for i, image in enumerate(images):
            Image.fromarray(image[0].numpy()).save(folder / f"{i:04d}.png")
        folders.append(str(folder))
    theirs = calculate_metrics(
        input1=folders[1], input2=folders[0], fid=True, kid=True, prc=True, kid_subset_size=8,
        feature_extractor="inception-v3-compat", feature_extractor_weights_path=str(weights.path),
        cuda=False, cache=False, verbose=False, save_cpu_ram=True,
    )  # fmt: skip
    assert ours["fid"] == pytest.approx(theirs["frechet_inception_distance"], rel=1e-5)
    assert ours["kid_mean"] == pytest.approx(theirs["kernel_inception_distance_mean"], rel=1e-5)
    assert ours["kid_std"] == pytest.approx(theirs["kernel_inception_distance_std"], rel=1e-5)
    assert (ours["precision"], ours["recall"]) == (theirs["precision"], theirs["recall"])
    assert 0 < ours["precision"] < 1 or 0 < ours["recall"] < 1  # not a degenerate pair that any code would match


def test_fid_does_not_depend_on_the_batch_size(digits, features, ours, extractor, state):
    small_batches = image_features(extractor, digits[1], 3, state)["2048"]
    assert fid(small_batches, features[0]) == pytest.approx(ours["fid"], rel=1e-5)


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated")
def test_converted_inception_matches_the_torchscript(digits, extractor):
    from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x

    images = digits[0][:4].expand(-1, 3, -1, -1)
    scripted = torch.jit.load(str(inception.fid_helper_file()), map_location="cpu")
    with torch.no_grad():
        (ours,) = extractor(images)
        # the TorchScript takes what torch-fidelity feeds its first conv: 299 px, (x - 128) / 128
        resized = interpolate_bilinear_2d_like_tensorflow1x(images.float(), size=(299, 299), align_corners=False)
        reference = scripted((resized - 128) / 128)
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)
    assert ours.abs().max() > 0.1  # real features, not all zero


# --------------------------------------------------------------------------- IS with a stand-in classifier


def stand_in_class():
    """A fixed random linear classifier on 4x4-pooled grayscale, registered with torch-fidelity."""
    from torch_fidelity import register_feature_extractor
    from torch_fidelity.feature_extractor_base import FeatureExtractorBase
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

    class StandInClassifier(FeatureExtractorBase):
        def __init__(self, name, features_list, **kwargs):
            super().__init__(name, features_list)
            self.weight = torch.nn.Parameter(torch.randn(16, 10, generator=torch.Generator().manual_seed(1)))

        def forward(self, x):
            pooled = torch.nn.functional.adaptive_avg_pool2d(x.float().mean(1, keepdim=True) / 255, 4).flatten(1)
            return (pooled @ self.weight * 4,)

        @staticmethod
        def get_provided_features_list():
            return ("logits_unbiased",)

        @staticmethod
        def get_default_feature_layer_for_metric(metric):
            return {"isc": "logits_unbiased"}[metric]

        @staticmethod
        def can_be_compiled():
            return False

        @staticmethod
        def get_dummy_input_for_compile():
            return None

    if STAND_IN not in FEATURE_EXTRACTORS_REGISTRY:
        register_feature_extractor(STAND_IN, StandInClassifier)
    return FEATURE_EXTRACTORS_REGISTRY[STAND_IN]


def hand_inception_score(logits: torch.Tensor, splits: int, seed: int) -> tuple[float, float]:
    """exp(E_x KL(p(y|x) || p(y))) per split, after torch-fidelity's seeded shuffle; mean and std."""
    p = torch.softmax(logits.double(), dim=1)[np.random.RandomState(seed).permutation(len(logits))]
    scores = []
    for i in range(splits):
        part = p[i * len(p) // splits : (i + 1) * len(p) // splits]
        marginal = part.mean(0, keepdim=True)
        scores.append(float(torch.exp((part * (part.log() - marginal.log())).sum(1).mean())))
    return float(np.mean(scores)), float(np.std(scores))


def test_inception_score_equals_a_hand_computation(state):
    cls = stand_in_class()
    images = torch.randint(0, 256, (40, 1, 28, 28), generator=torch.Generator().manual_seed(2), dtype=torch.uint8)
    extractor = create_extractor(None, ["logits_unbiased"], torch.device("cpu"), name=STAND_IN)
    layers = feature_layers(("is",), STAND_IN)
    ours = compute_metrics(image_features(extractor, images, 7, state), None, settings(("is",), is_splits=4), layers)
    with torch.no_grad():
        (logits,) = cls(STAND_IN, ["logits_unbiased"])(images.expand(-1, 3, -1, -1))
    mean, std = hand_inception_score(logits, splits=4, seed=2020)
    # float32 logits from batches of 7 vs one batch of 40 differ in the last bits
    assert ours["is_mean"] == pytest.approx(mean, rel=1e-6) and ours["is_std"] == pytest.approx(std, rel=1e-5)
    assert 1.0 < mean < 10.0 and ours["fid"] is None


# --------------------------------------------------------------------------- weights


def test_an_unanswered_download_falls_back_to_offline_weights_quickly(tmp_path, weights, monkeypatch):
    """A server that accepts the connection and never answers: the download gives up after its timeout."""
    monkeypatch.delenv("GAN_OFFLINE", raising=False)
    monkeypatch.delenv("GAN_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.setenv("GAN_CACHE_DIR", str(weights.path.parents[1]))
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/weights.pth"
        start = time.monotonic()
        found = inception.resolve_weights(None, url=url, timeout=1.0, hub_dir=tmp_path / "hub")
        elapsed = time.monotonic() - start
    assert elapsed < 10, f"the download attempt took {elapsed:.1f} s"
    assert found.path == weights.path and not found.has_classifier
    assert "failed" in found.note and "timed out" in found.note
    assert not list((tmp_path / "hub").glob("*")), "a failed download left a file behind"


def test_a_weights_file_that_is_not_inception_is_refused(tmp_path, monkeypatch):
    bogus = tmp_path / "bogus.pth"
    torch.save({"fc.weight": torch.zeros(3, 3)}, bogus)
    monkeypatch.setenv("GAN_INCEPTION_WEIGHTS", str(bogus))
    with pytest.raises(GanError, match="not torch-fidelity's InceptionV3"):
        inception.resolve_weights(None)


def test_the_progress_bar_shows_on_the_main_process_of_a_terminal_only(monkeypatch):
    from types import SimpleNamespace

    from gan.evaluation import features

    main, other = SimpleNamespace(is_main_process=True), SimpleNamespace(is_main_process=False)
    assert features.progress(10, "x", other).disable
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    assert features.progress(10, "x", main).disable  # a log file, SLURM's output: quiet
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    with features.progress(10, "x", main) as bar:
        assert not bar.disable and bar.total == 10

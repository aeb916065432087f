"""bench.quality's record of timed runs (OUT/quality.json): read back, refused in one line when it does
not fit, and the CPU it was measured on named with the table."""

import argparse
import json
import subprocess
import sys

import pytest
from helpers import assert_bench_refuses

from bench import quality
from bench.quality import ROOT, check_sets, cpu_name, read_store, summary, table, train_command

RUN = {"seed": 0, "steps": 10, "kimg": 0.64, "cpu": "some CPU (avx2)"}


def test_a_missing_record_is_empty_and_a_written_one_reads_back(tmp_path):
    store = tmp_path / "quality.json"
    assert read_store(store) == {}
    store.write_text(json.dumps({"selfcond_mnist": [RUN]}))
    assert read_store(store) == {"selfcond_mnist": [RUN]}


@pytest.mark.parametrize(
    "text, says",
    [
        ('{"selfcond_mnist": [{"seed": 0, "ste', "cannot be read"),  # torn mid-write
        (b"\xff\xfe\x00", "cannot be read"),  # not text
        ("[1, 2]", "is not bench.quality's record"),
        ('{"selfcond_mnist": {"seed": 0}}', "is not bench.quality's record"),
        ('{"selfcond_mnist": [{"seed": 0}]}', "is not bench.quality's record"),  # no steps or kimg
    ],
)
def test_a_record_that_does_not_fit_is_one_line_naming_the_file(tmp_path, text, says):
    store = tmp_path / "quality.json"
    store.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(SystemExit) as stop:
        read_store(store)
    message = str(stop.value.code)
    assert message.startswith(f"error: {store} ") and says in message and "\n" not in message


def test_a_folder_in_place_of_the_record_is_one_line(tmp_path):
    (tmp_path / "quality.json").mkdir()
    with pytest.raises(SystemExit, match="cannot be read"):
        read_store(tmp_path / "quality.json")


def test_the_cpu_name_carries_its_vector_extensions_and_the_summary_its_range():
    assert cpu_name().endswith(")") and "(" in cpu_name()
    runs = [dict(RUN, fid=12.0), dict(RUN, fid=10.0), dict(RUN, fid=14.5)]
    assert summary(runs, "fid") == "12.2 (10.0–14.5)"
    assert summary(runs[:1], "fid") == "12.0"


@pytest.mark.parametrize("args, says", [(["--minutes", "0"], "--minutes 0"), (["--minutes", "nan"], "--minutes nan"),
                                        (["--out", "FILE"], "cannot be made a folder"),
                                        (["--set", "model.nope=1"], "--set for dcgan_mnist: "),
                                        (["--set", "model.g_channels=-3"], "model.g_channels")])  # fmt: skip
def test_bad_arguments_are_one_line_before_anything_trains(tmp_path, args, says):
    args = list(args)
    args += [] if "--out" in args else ["--out", str(tmp_path / "out")]  # never the repository's runs/
    assert_bench_refuses("quality", ["--presets", "dcgan_mnist", *args], says, tmp_path)


def test_set_overrides_go_to_training_before_the_protocols_own_keys():
    cmd = train_command("selfcond_mnist", ROOT / "runs" / "x", 2, ["model.g_channels=64", "train.seed=9"])
    assert "model.g_channels=64" in cmd
    assert cmd.index("train.seed=9") < cmd.index("train.seed=2")  # the later override wins: the protocol's seed
    check_sets(["selfcond_mnist", "dcgan_mnist"], ["model.g_channels=64"])  # loads: no exit


def test_set_is_refused_for_the_guides_loop_and_for_a_key_that_does_not_exist():
    with pytest.raises(SystemExit, match="does not apply to 'guide'"):
        check_sets(["dcgan_mnist", "guide"], ["model.g_channels=64"])
    with pytest.raises(SystemExit, match="^error: --set for dcgan_mnist: .*model.nope"):
        check_sets(["dcgan_mnist"], ["model.nope=1"])
    check_sets(["guide"], [])  # without --set the guide runs as before


def test_the_table_names_how_the_runs_trained_from_their_record_also_when_scoring_later():
    trained = dict(RUN, threads=2, mixed_precision="bf16", overrides=["model.g_channels=64"], fid=10.8,
                   fd_mnist=1.65, precision=0.58, recall=0.74)  # fmt: skip
    args = argparse.Namespace(seeds=[0], num_samples=2000, minutes=10.0, presets="selfcond_mnist", threads=None)
    text = table({"selfcond_mnist": [trained]}, args)  # args as --phase score has them: no precision, no --set
    assert "| `selfcond_mnist` `model.g_channels=64` | 10 | 1 | 10.8 | 1.65 | 0.58 | 0.74 |" in text
    assert text.endswith("--mixed-precision bf16 --set model.g_channels=64") and "some CPU (avx2)" in text


def test_a_score_the_run_folder_holds_for_the_checkpoint_and_sample_count_is_read_not_made_again(
        tmp_path, monkeypatch):  # fmt: skip
    """--phase score over seeds 0,1,2 after seed 0 was scored evaluates seeds 1 and 2 only. evaluate.py's
    part is played by a function that appends its record, as evaluate.py does, and counts its calls."""
    numbers = {"fid": 8.5, "fd_mnist": 1.3, "precision": 0.66, "recall": 0.77}
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("\n".join(json.dumps(r) for r in [
        {"step": 500, "num_samples": 2000, **numbers, "fid": 30.0},  # an older checkpoint
        {"step": 900, "num_samples": 1000, **numbers, "fid": 11.0},  # fewer samples
        {"step": 900, "num_samples": 2000, **numbers, "fd_mnist": None},  # scored without fd_mnist
    ]) + "\n")  # fmt: skip
    monkeypatch.setattr(quality, "resolve_checkpoint", lambda run_dir: argparse.Namespace(meta={"step": 900}))
    calls = []

    def evaluator(cmd, **kwargs):
        calls.append(cmd)
        with metrics.open("a") as f:
            f.write(json.dumps({"step": 900, "num_samples": int(cmd[cmd.index("--num-samples") + 1]), **numbers}) + "\n")
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(quality.subprocess, "run", evaluator)
    assert quality.stored_score(tmp_path, 900, 2000) is None
    assert quality.evaluate(tmp_path, 2000, log=None) == numbers and len(calls) == 1
    assert quality.evaluate(tmp_path, 2000, log=None) == numbers and len(calls) == 1  # read, not made again
    assert quality.evaluate(tmp_path, 1000, log=None)["fid"] == 11.0 and len(calls) == 1
    quality.evaluate(tmp_path, 500, log=None)
    assert len(calls) == 2  # no record of 500 samples: scored


def test_a_folder_in_place_of_a_runs_metrics_is_one_line(tmp_path):
    (tmp_path / "metrics.jsonl").mkdir()
    with pytest.raises(SystemExit) as error:
        quality.stored_score(tmp_path, 900, 2000)
    assert str(error.value).startswith(f"error: {tmp_path / 'metrics.jsonl'} cannot be read (Is a directory)")


def test_score_without_presets_or_seeds_scores_the_runs_the_record_holds(tmp_path, monkeypatch, capsys):
    """`--phase score --out OUT` alone: the presets and seeds come from OUT/quality.json, and the table's
    command names them. Each run's metrics.jsonl holds its score, so evaluate.py is not started."""
    record = {"wgan_gp_mnist": [dict(RUN, seed=s, threads=2) for s in (2, 0)],
              "cgan_mnist": [dict(RUN, seed=s, threads=2, overrides=["model.g_extra_layers=1"]) for s in (0, 2)]}  # fmt: skip
    (tmp_path / "quality.json").write_text(json.dumps(record))
    for name in ("wgan_gp_mnist-seed0", "wgan_gp_mnist-seed2", "cgan_mnist-seed0", "cgan_mnist-seed2"):
        (tmp_path / name).mkdir()
        score = {"step": 10, "num_samples": 2000, "fid": 70.0, "fd_mnist": 40.0, "precision": 0.2, "recall": 0.3}
        (tmp_path / name / "metrics.jsonl").write_text(json.dumps(score) + "\n")
    monkeypatch.setattr(quality, "resolve_checkpoint", lambda run_dir: argparse.Namespace(meta={"step": 10}))
    monkeypatch.setattr(quality.subprocess, "run", lambda *a, **k: pytest.fail("evaluate.py started"))
    monkeypatch.setattr(sys, "argv", ["bench.quality", "--phase", "score", "--out", str(tmp_path)])
    quality.main()
    out = capsys.readouterr().out
    assert "| `wgan_gp_mnist` | 10 (10–10) | 1 (1–1) | 70.0 (70.0–70.0) |" in out and "| `cgan_mnist` `model.g_extra_layers=1` |" in out
    assert "--presets wgan_gp_mnist,cgan_mnist --seeds 0,2 " in out
    # --seeds chooses among them; a seed the record lacks is one line
    monkeypatch.setattr(sys, "argv", ["bench.quality", "--phase", "score", "--out", str(tmp_path), "--seeds", "1"])
    with pytest.raises(SystemExit, match="has no run wgan_gp_mnist-seed1; train it with --phase train first"):
        quality.main()


def test_score_of_an_empty_record_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["bench.quality", "--phase", "score", "--out", str(tmp_path / "new")])
    with pytest.raises(SystemExit, match="quality.json holds no runs to score; train them with --phase train first"):
        quality.main()
    assert not (tmp_path / "new").exists()


def test_a_run_without_a_checkpoint_to_score_is_one_line(tmp_path):
    (tmp_path / "checkpoints").mkdir()  # emptied: a run folder whose checkpoints were moved away
    with pytest.raises(SystemExit) as error:
        quality.evaluate(tmp_path, 2000, log=None)
    assert str(error.value).startswith(f"error: run folder '{tmp_path}' has no complete checkpoint")

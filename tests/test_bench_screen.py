"""bench.screen: variants trained side by side to a deadline, each signalled once, then scored by evaluate.py."""

import json
import sys

import pytest
from helpers import assert_bench_refuses

from bench import screen
from bench.screen import parse_variant, scored_steps, table, train_all

# A stand-in for train.py: counts the SIGTERMs it gets, and takes a second to "checkpoint" after the
# first, as the loop does, then exits 75. A second SIGTERM in that second is counted, not obeyed.
CHILD = """
import signal, sys, time
from pathlib import Path
log = Path(sys.argv[1])
def handle(signum, frame):
    log.write_text(log.read_text() + "TERM\\n")
signal.signal(signal.SIGTERM, handle)
log.write_text("")
while not log.read_text():
    time.sleep(0.05)
time.sleep(1.5)
sys.exit(75)
"""


def test_each_training_gets_one_sigterm_at_the_deadline_and_exits_as_preempted(tmp_path, monkeypatch):
    child = tmp_path / "child.py"
    child.write_text(CHILD)
    monkeypatch.setattr(screen, "train_command", lambda preset, run_dir, *rest: [sys.executable, str(child),
                                                                               str(tmp_path / f"{run_dir.name}.log")])  # fmt: skip
    variants = [("a", "dcgan_mnist", []), ("b", "dcgan_mnist", []), ("c", "dcgan_mnist", [])]
    codes = train_all(variants, tmp_path, every=10, max_steps=100, seconds=2.0, parallel=2, precision="no")
    assert codes == {"a": 75, "b": 75}  # c never started: the deadline came first
    assert (tmp_path / "a.log").read_text() == "TERM\n" and (tmp_path / "b.log").read_text() == "TERM\n"


def test_scored_steps_are_the_multiples_and_the_newest(tmp_path):
    for step in (3, 10, 17, 20, 23):
        (tmp_path / "run" / "checkpoints" / f"step-{step:07d}").mkdir(parents=True)
        (tmp_path / "run" / "checkpoints" / f"step-{step:07d}" / "meta.json").write_text(json.dumps({"step": step}))
    assert scored_steps(tmp_path / "run", every=10) == [10, 20, 23]
    assert scored_steps(tmp_path / "none", every=10) == []


def test_the_table_has_a_column_per_scored_step():
    rows = {"base": {"scores": {"10": {"fid": 9.0, "fd_mnist": 2.0}, "23": {"fid": 7.5, "fd_mnist": 1.25}}},
            "bce": {"scores": {"10": {"fid": 8.5, "fd_mnist": 1.5}}}}  # fmt: skip
    assert table(rows).splitlines() == ["| variant | 10 FID / fd_mnist | 23 FID / fd_mnist |", "|---|---|---|",
                                        "| base | 9.00 / 2.00 | 7.50 / 1.25 |", "| bce | 8.50 / 1.50 |  |"]  # fmt: skip


def test_a_variant_is_checked_before_anything_trains():
    assert parse_variant("bce dcgan_mnist loss.name=hinge") == ("bce", "dcgan_mnist", ["loss.name=hinge"])


@pytest.mark.parametrize("args, says", [(["--variant", "x nope"], "no preset configs/nope.yaml"),
                                        (["--variant", "x dcgan_mnist model.nope=1"], "--variant x: "),
                                        (["--variant", "a/b dcgan_mnist"], "NAME in letters"),
                                        (["--variant", "x dcgan_mnist", "--variant", "x dcgan_mnist"], "distinct"),
                                        (["--minutes", "nan"], "--minutes nan"),
                                        (["--every", "0"], "0 < --every"),
                                        (["--out", "FILE"], "is not an empty folder")])  # fmt: skip
def test_bad_arguments_are_one_line_before_anything_trains(tmp_path, args, says):
    args = list(args)
    args += [] if "--variant" in args else ["--variant", "base dcgan_mnist"]
    args += [] if "--every" in args else ["--every", "10"]
    args += [] if "--out" in args else ["--out", str(tmp_path / "out")]
    assert_bench_refuses("screen", ["--max-steps", "20", *args], says, tmp_path)

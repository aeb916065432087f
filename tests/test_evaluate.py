"""evaluate.py on tiny real runs: metrics.jsonl, skipping, the shared real-data cache, W&B, two processes,
watch mode beside training, and bad input. 16 generated and 16 real images per checkpoint keep Inception
(~10 images/s here) short; the offline Inception weights are converted once per test session.
"""

import contextlib
import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import time

import pytest
import torch
from helpers import ACCELERATE, PYTHON, ROOT, TINY, base_env, free_port, run, snapshot, train
from safetensors.torch import save_file
from wandb_records import history, metric_summaries, wandb_files

FIELDS = ("step", "kimg", "fid", "kid_mean", "kid_std", "is_mean", "is_std", "num_samples", "checkpoint")
SMALL = ["--num-samples", "16", "--num-real", "16", "--kid-subset-size", "8", "--batch-size", "16"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """The same folder as tests/test_evaluate_metrics.py uses."""
    return tmp_path_factory.getbasetemp() / "gan-cache"


def eval_env(cache, **extra) -> dict:
    return base_env(GAN_CACHE_DIR=str(cache), GAN_OFFLINE="1", ACCELERATE_USE_CPU="1", **extra)


def evaluate_cmd(run_dir, *args, processes: int = 1) -> list:
    if processes == 1:
        return [PYTHON, "evaluate.py", run_dir, *args]
    return [ACCELERATE, "launch", "--multi_gpu", "--num_processes", str(processes), "--num_machines", "1",
            "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
            "evaluate.py", run_dir, *args]  # fmt: skip


def evaluate(cache, run_dir, *args, processes: int = 1, env=None, check=True):
    return run(evaluate_cmd(run_dir, *args, processes=processes), env=env or eval_env(cache), check=check)


def records(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def assert_user_error(proc, *phrases) -> str:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), proc.stderr
    for phrase in phrases:
        assert phrase in last, last
    return last


@pytest.fixture(scope="module")
def evaluated(dcgan_run, cache, tmp_path_factory):
    """A copy of the tiny DCGAN run (checkpoints at steps 3 and 6), evaluated once."""
    run_dir = tmp_path_factory.mktemp("evaluated") / "run"
    shutil.copytree(dcgan_run, run_dir)
    proc = evaluate(cache, run_dir, *SMALL)
    return run_dir, proc


def test_metrics_jsonl_best_json_and_a_second_call_that_skips(evaluated, cache):
    run_dir, first = evaluated
    rows = records(run_dir)
    assert [r["step"] for r in rows] == [3, 6]
    for r in rows:
        assert set(FIELDS) <= set(r)
        assert r["fid"] > 0 and r["kid_std"] >= 0 and r["num_samples"] == 16
        assert r["is_mean"] is None  # offline weights have no classifier: reported, not guessed
        assert (run_dir / r["checkpoint"] / "meta.json").exists()
    assert rows[1]["kimg"] == pytest.approx(6 * 16 / 1000)
    assert "IS unavailable" in first.stdout and "step-0000006" in first.stdout
    best = json.loads((run_dir / "best.json").read_text())
    assert best["fid"] == min(r["fid"] for r in rows) and best["step"] in (3, 6)

    before, cached = snapshot(run_dir), snapshot(cache / "real-stats")
    second = evaluate(cache, run_dir, *SMALL)
    assert "nothing new to evaluate: 2 checkpoint(s)" in second.stdout
    assert snapshot(run_dir) == before and snapshot(cache / "real-stats") == cached


def test_real_statistics_are_shared_across_runs_and_numbers_reach_wandb(evaluated, dcgan_run, cache, tmp_path):
    run_dir = tmp_path / "other"
    shutil.copytree(dcgan_run, run_dir)
    (run_dir / "wandb_run_id.txt").write_text("evaltest0001")
    cached = snapshot(cache / "real-stats")
    proc = evaluate(cache, run_dir, *SMALL, "--checkpoints", "latest", "--metrics", "kid",
                    env=eval_env(cache, WANDB_MODE="offline"))  # fmt: skip
    assert "real-data statistics (16 images): loaded from" in proc.stdout
    assert snapshot(cache / "real-stats") == cached
    (row,) = records(run_dir)
    reference = records(evaluated[0])[1]  # the same G, noise and real images
    assert row["step"] == 6 and row["fid"] is None
    assert row["kid_mean"] == pytest.approx(reference["kid_mean"], rel=1e-6)
    (wandb_file,) = wandb_files(run_dir)
    logged = [r for r in history(wandb_file) if "eval/kid_mean" in r]
    assert [(r["train/step"], r["eval/kid_mean"]) for r in logged] == [(6, pytest.approx(row["kid_mean"]))]
    # the run's summary keeps the best of each main number, not the last
    summaries = metric_summaries(wandb_file)
    assert summaries["eval/fid"] == ["min"] and summaries["eval/kid_mean"] == ["min"]
    assert summaries["eval/is_mean"] == ["max"] and summaries["eval/recall"] == ["max"]


def test_two_processes_give_the_numbers_of_one(evaluated, dcgan_run, cache, tmp_path):
    run_dir, fresh = tmp_path / "run", tmp_path / "cache"
    shutil.copytree(dcgan_run, run_dir)
    (fresh / "inception").parent.mkdir()
    (fresh / "inception").symlink_to(cache / "inception")  # reuse the conversion; real statistics afresh
    proc = evaluate(fresh, run_dir, *SMALL, "--checkpoints", "6", processes=2, env=eval_env(fresh))
    assert "real-data statistics (16 images): computed" in proc.stdout
    (two,) = records(run_dir)
    one = records(evaluated[0])[1]
    for key in ("fid", "kid_mean", "kid_std"):
        assert two[key] == pytest.approx(one[key], rel=1e-5), key


def test_a_weights_file_with_a_classifier_gives_inception_score(dcgan_run, cache, tmp_path, monkeypatch):
    """GAN_INCEPTION_WEIGHTS: the offline conv stack plus a random 1008-way classifier stands in for
    torch-fidelity's file (not downloadable here); IS is then computed, not reported unavailable."""
    import torch

    from gan.evaluation.inception import converted_weights

    monkeypatch.setenv("GAN_CACHE_DIR", str(cache))
    state = torch.load(converted_weights(note="").path, weights_only=True)
    state["fc.weight"] = torch.randn(1008, 2048, generator=torch.Generator().manual_seed(0)) * 0.1
    state["fc.bias"] = torch.zeros(1008)
    weights = tmp_path / "inception.pth"
    torch.save(state, weights)
    run_dir = tmp_path / "run"
    shutil.copytree(dcgan_run, run_dir)
    proc = evaluate(cache, run_dir, *SMALL, "--metrics", "is", "--checkpoints", "latest",
                    env=eval_env(cache, GAN_INCEPTION_WEIGHTS=str(weights)))  # fmt: skip
    assert "IS unavailable" not in proc.stdout
    (row,) = records(run_dir)
    assert row["is_mean"] > 1 and row["is_std"] >= 0 and row["fid"] is None
    assert row["settings"]["weights"].startswith("inception-")


@pytest.mark.parametrize("case", ["no checkpoints", "N below KID subset", "unknown metric", "unknown step"])
def test_bad_input_is_one_line_and_exit_2(case, dcgan_run, cache, tmp_path):
    run_dir, args = dcgan_run, [*SMALL]
    if case == "no checkpoints":
        run_dir = tmp_path / "empty"
        run_dir.mkdir()
        shutil.copy(dcgan_run / "config.yaml", run_dir)
    elif case == "N below KID subset":
        args = ["--num-samples", "16", "--kid-subset-size", "1000"]
    elif case == "unknown metric":
        args += ["--metrics", "fid,precision"]
    else:
        args += ["--checkpoints", "4"]
    before = snapshot(run_dir)
    proc = evaluate(cache, run_dir, *args, check=False)
    phrases = {"no checkpoints": ["no complete checkpoint"], "N below KID subset": ["--num-samples 16", "1000"],
               "unknown metric": ["precision", "fid, kid, is"], "unknown step": ["step(s) 4", "complete: 3, 6"]}  # fmt: skip
    assert_user_error(proc, *phrases[case])
    assert snapshot(run_dir) == before


def test_corrupt_and_foreign_checkpoints_are_skipped_named_and_the_rest_evaluated(dcgan_run, cache, tmp_path):
    from gan.checkpoint import state_dict_for_file
    from gan.config import load_config
    from gan.networks import build_networks

    run_dir = tmp_path / "run"
    shutil.copytree(dcgan_run, run_dir)
    ckpts = run_dir / "checkpoints"
    g_ema = ckpts / "step-0000003" / "G_ema.safetensors"
    g_ema.write_bytes(g_ema.read_bytes()[:1000])  # cut short, as by a full disk
    shutil.copytree(ckpts / "step-0000006", ckpts / "step-0000009")
    meta = json.loads((ckpts / "step-0000009" / "meta.json").read_text())
    (ckpts / "step-0000009" / "meta.json").write_text(json.dumps({**meta, "step": 9}))
    state = torch.load(ckpts / "step-0000009" / "state.pt", weights_only=True)
    torch.save({**state, "step": 9}, ckpts / "step-0000009" / "state.pt")
    mlp_G, _ = build_networks(load_config(ROOT / "configs" / "vanilla_mnist.yaml"), 0)
    save_file(state_dict_for_file(mlp_G), ckpts / "step-0000009" / "G_ema.safetensors")  # another architecture

    proc = evaluate(cache, run_dir, *SMALL, "--metrics", "kid", check=False)
    last = assert_user_error(proc, "2 checkpoint(s) could not be evaluated", "step 3:", "step 9:",
                             "1 other(s) were evaluated")  # fmt: skip
    assert "not a valid safetensors file" in last and "does not fit the configured network" in last
    assert "skipped step-0000003" in proc.stderr and "skipped step-0000009" in proc.stderr
    assert [r["step"] for r in records(run_dir)] == [6]


def test_watch_evaluates_every_checkpoint_once_beside_training_and_exits(cache, tmp_path):
    run_dir = tmp_path / "run"
    watcher = subprocess.Popen(
        [PYTHON, "evaluate.py", run_dir, *SMALL, "--metrics", "kid", "--watch", "--poll-seconds", "1"],
        cwd=ROOT, env=eval_env(cache), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        train("dcgan_mnist", run_dir, *TINY, "train.steps=9", "train.keep_checkpoints=10")
        out, err = watcher.communicate(timeout=300)
    finally:
        watcher.kill()
    assert watcher.returncode == 0, out + err
    assert [r["step"] for r in records(run_dir)] == [3, 6, 9]


def test_watch_stops_on_ctrl_c(evaluated, cache, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(evaluated[0], run_dir)
    (run_dir / "FINISHED").unlink()  # as if training were still running
    # SIGINT back to its default in the child: a suite started in the background by a non-interactive
    # shell (`... &`) inherits SIGINT ignored, and Python then never turns it into KeyboardInterrupt
    watcher = subprocess.Popen([PYTHON, "evaluate.py", run_dir, *SMALL, "--watch", "--poll-seconds", "1"],
                               cwd=ROOT, env=eval_env(cache), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    try:
        assert any("watching" in line for line in watcher.stdout), "the watcher never started watching"
        time.sleep(2)  # at least one poll
        watcher.send_signal(signal.SIGINT)
        try:
            out, err = watcher.communicate(timeout=120)
        except subprocess.TimeoutExpired:  # keep what it printed
            watcher.kill()
            out, err = watcher.communicate()
            pytest.fail(f"the watcher did not stop within 120 s of SIGINT; stdout:\n{out}\nstderr:\n{err}")
    finally:
        watcher.kill()
    assert watcher.returncode == 0, out + err
    assert "stopped (Ctrl-C)" in out and "Traceback" not in err


def test_a_second_evaluator_of_the_run_waits_and_never_scores_a_checkpoint_twice(evaluated, cache, tmp_path):
    """While DIR/.eval.lock is held (another evaluator scoring step 6), a second one says it waits; the
    holder records step 6 and lets go, and the second finds that record instead of scoring it again."""
    run_dir = tmp_path / "run"
    shutil.copytree(evaluated[0], run_dir)
    step3, step6 = (run_dir / "metrics.jsonl").read_text().splitlines()
    (run_dir / "metrics.jsonl").write_text(step3 + "\n")  # step 6 not yet recorded
    holder = os.open(run_dir / ".eval.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(holder, fcntl.LOCK_EX)
    second = subprocess.Popen([PYTHON, "evaluate.py", run_dir, *SMALL], cwd=ROOT, env=eval_env(cache),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert any("another evaluator is scoring" in line for line in second.stderr), "the second never waited"
        with open(run_dir / "metrics.jsonl", "a") as f:  # the holder's record of step 6
            f.write(step6 + "\n")
        os.close(holder)
        out, err = second.communicate(timeout=300)
    finally:
        second.kill()
    assert second.returncode == 0, out + err
    assert (run_dir / "metrics.jsonl").read_text().splitlines() == [step3, step6]
    assert "nothing new to evaluate" in out


# --------------------------------------------------------------------------- results files


def test_a_deleted_best_json_is_written_again(evaluated, cache, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(evaluated[0], run_dir)
    best = (run_dir / "best.json").read_text()
    (run_dir / "best.json").unlink()
    proc = evaluate(cache, run_dir, *SMALL)
    assert "nothing new to evaluate" in proc.stdout
    assert (run_dir / "best.json").read_text() == best


def test_rotation_keeps_the_best_checkpoint_and_best_json_names_one_that_exists(evaluated, cache, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(evaluated[0], run_dir)
    best = json.loads((run_dir / "best.json").read_text())["step"]  # 3 or 6
    # resumed to step 12 keeping 1 checkpoint: rotation keeps the newest and the best
    train("dcgan_mnist", run_dir, *TINY, "train.steps=12", "train.keep_checkpoints=1")
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == [f"step-{best:07d}", "step-0000012"]
    # a best checkpoint removed all the same (by hand, or by a version that did not keep it):
    # the next evaluation names the best checkpoint that exists
    shutil.rmtree(run_dir / "checkpoints" / f"step-{best:07d}")
    evaluate(cache, run_dir, *SMALL)
    assert json.loads((run_dir / "best.json").read_text())["step"] == 12


def test_a_cut_last_line_of_metrics_jsonl_loses_no_record(evaluated, cache, tmp_path):
    """Killed while appending step 6's line: step 6 is evaluated again, on a line of its own."""
    run_dir = tmp_path / "run"
    shutil.copytree(evaluated[0], run_dir)
    metrics = run_dir / "metrics.jsonl"
    first, second = metrics.read_text().splitlines()
    metrics.write_text(first + "\n" + second[: len(second) // 2])
    proc = evaluate(cache, run_dir, *SMALL)
    lines = metrics.read_text().splitlines()
    assert lines[:2] == [first, second[: len(second) // 2]]  # nothing that was there is lost
    (new,) = [json.loads(line) for line in lines[2:]]
    old = json.loads(second)
    assert new.keys() == old.keys() and new["step"] == 6
    for key in ("fid", "kid_mean", "kid_std"):
        assert new[key] == pytest.approx(old[key], rel=1e-6), key  # the numbers of the first evaluation
    assert f"warning: {metrics}: skipped line 2" in proc.stderr
    best = json.loads((run_dir / "best.json").read_text())
    assert best in (json.loads(first), new) and best["fid"] == min(json.loads(first)["fid"], new["fid"])


@contextlib.contextmanager
def read_only(folder):
    """folder read-only: mode 555, or for root (whom modes do not stop) a read-only bind mount."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(0o755)
        return
    if subprocess.run(["mount", "--bind", folder, folder], capture_output=True).returncode != 0:
        pytest.skip("running as root without the right to mount: no read-only run folder can be made here")
    try:
        remount = subprocess.run(["mount", "-o", "remount,ro,bind", folder], capture_output=True, text=True)
        if remount.returncode != 0:
            pytest.skip(f"running as root; the bind mount cannot be made read-only: {remount.stderr.strip()}")
        yield
    finally:
        subprocess.run(["umount", folder], check=True)


@pytest.mark.parametrize("case", ["read-only folder", "metrics.jsonl is a folder", "best.json is a folder"])
def test_a_run_folder_that_cannot_be_written_is_refused_before_any_work(case, dcgan_run, cache, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(dcgan_run, run_dir)
    name = {"metrics.jsonl is a folder": "metrics.jsonl", "best.json is a folder": "best.json"}.get(case)
    if name:
        (run_dir / name).mkdir()
    before = snapshot(run_dir)
    with read_only(run_dir) if case == "read-only folder" else contextlib.nullcontext():
        proc = evaluate(cache, run_dir, *SMALL, check=False)
    assert_user_error(proc, f"run folder {str(run_dir)!r} cannot be written", *([name] if name else []))
    assert "real-data statistics" not in proc.stdout and "Inception" not in proc.stdout  # nothing loaded
    assert snapshot(run_dir) == before



# Writes the cache's own serializers make, under a file-size limit of 1,000 bytes: past it every write
# fails (EFBIG, SIGXFSZ ignored), as on a full disk (ENOSPC), which a tmpfs of 64 kB showed by hand.
FULL_DISK = """
import resource, signal, sys
from pathlib import Path
import torch
from safetensors.torch import save_file
from gan.cache import write_to_cache
from gan.errors import GanError
writers = {"safetensors": lambda tmp: save_file({"x": torch.zeros(10_000)}, tmp),
           "torch.save": lambda tmp: torch.save(torch.zeros(10_000), tmp)}
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (1000, resource.RLIM_INFINITY))
try:
    write_to_cache(Path(sys.argv[1]) / "stats.safetensors", writers[sys.argv[2]])
except GanError as err:
    print(err)
"""


@pytest.mark.parametrize("writer", ["safetensors", "torch.save"])
def test_a_cache_file_that_cannot_be_written_is_one_line_and_leaves_no_file(tmp_path, writer):
    """The real statistics (safetensors) and the converted Inception weights (torch.save) go through write_to_cache."""
    folder = tmp_path / "cache"
    folder.mkdir()
    out = subprocess.run([PYTHON, "-c", FULL_DISK, folder, writer], cwd=ROOT, capture_output=True, text=True,
                         timeout=120).stdout  # fmt: skip
    assert re.fullmatch(r"cache file '.*stats\.safetensors' cannot be written \(.+\); free space or set "
                        r"GAN_CACHE_DIR\n", out), out  # fmt: skip
    assert list(folder.iterdir()) == []

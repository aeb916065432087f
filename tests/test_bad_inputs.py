"""Bad input to train.py, evaluate.py, `gan.generate` and `gan.report`: one table, one check per row.

Every row must end with a non-zero exit, one line `error: ...` that names the problem, no
traceback, and nothing lost: the case's folder (a copy of a finished run, a plain file, data
folders) is unchanged and no new run folder or output appears. The commands run side by side
before the checks, each in a process of its own (forked from one that imported torch: helpers.run).
"""

import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import PYTHON, ROOT, TINY, base_env, run, snapshot

EVALUATE = ROOT / "evaluate.py"
TRAIN = [PYTHON, "train.py", "--config", "configs/dcgan_mnist.yaml"]
ON_RUN = [*TRAIN, "--run-dir", "{run}", *TINY]  # the finished run's own settings, then the bad one
FOLDER = ["data.name=image_folder", "data.root={data}"]
GENERATE = [PYTHON, "-m", "gan.generate"]
REPORT = [PYTHON, "-m", "gan.report"]
EVAL = [PYTHON, str(EVALUATE)]


@dataclass
class Case:
    name: str
    args: list  # "{run}", "{new}", "{file}", "{empty}", "{junk}", "{locked}", "{data}", "{bad_yaml}"... filled in
    message: str  # must appear in the error line
    data: str = "{empty}"  # what {data} stands for
    skip: str | None = None  # why the row cannot run here, if it cannot
    env: dict | None = None  # environment variables the command gets besides base_env's


def skip_as_root() -> str | None:
    return "running as root: file permissions do not stop root from reading" if os.geteuid() == 0 else None


CASES = [
    # config values out of range and unknown enum values
    Case("steps_negative", [*ON_RUN, "train.steps=-3"], "train.steps must be > 0, got -3"),
    Case("batch_zero", [*ON_RUN, "train.batch_size=0"], "train.batch_size must be > 0, got 0"),
    Case("lr_g_zero_in_e_notation", [*ON_RUN, "optim.lr_g=0e-4"], "optim.lr_g must be > 0, got 0.0"),
    Case("betas_out_of_range", [*ON_RUN, "optim.betas=[0.5,1.5]"], "optim.betas must be two numbers in [0, 1)"),
    Case("ema_decay_one", [*ON_RUN, "train.ema_decay=1.0"], "train.ema_decay must be in (0, 1) or null"),
    Case("channels_two", [*ON_RUN, "data.channels=2"], "data.channels must be 1 or 3, got 2"),
    Case("on_nonfinite_unknown", [*ON_RUN, "train.on_nonfinite=ignore"],
         "train.on_nonfinite: unknown value 'ignore'; choose one of: stop, skip"),
    # what the networks and the data cannot do
    Case("dcgan_at_40px", [*ON_RUN, "data.resolution=40"],
         "data.resolution=40 cannot be produced by model.network=dcgan; choose one of: 28, 32, 64"),
    Case("batch_larger_than_data", [*ON_RUN, "data.limit=10"], "train.batch_size=16 x 1 process(es) is larger"),
    Case("channels_differ_from_the_run", [*ON_RUN, "data.channels=3"],
         "holds a run with a different config (data.channels: 1 -> 3)"),
    Case("data_folder_missing", [*ON_RUN, *FOLDER], "is not a folder (data.name=image_folder)", data="{new}"),
    Case("data_folder_empty", [*ON_RUN, *FOLDER], "holds no readable images"),
    Case("data_folder_only_junk", [*ON_RUN, *FOLDER], "holds no readable images", data="{junk}"),
    # mode 000: "cannot be read", or no images where the directory walk skips what it may not read
    Case("data_folder_unreadable", [*ON_RUN, *FOLDER], "data.root=", data="{locked}", skip=skip_as_root()),
    # run folders that cannot be one
    Case("run_dir_is_a_file", [*TRAIN, "--run-dir", "{file}", *TINY], "is a file, not a folder"),
    Case("run_dir_inside_a_file", [*TRAIN, "--run-dir", "{file}/run", *TINY], "is a file, not a folder"),
    Case("run_dir_in_proc", [*TRAIN, "--run-dir", "/proc/gan-bad-input-run", *TINY], "cannot be written to"),
    # train.py's command line
    Case("train_unknown_flag", [*ON_RUN, "--stepz", "3"], "unrecognized arguments: --stepz"),
    Case("default_run_dir_of_a_path_like_preset", [*TRAIN, *TINY, "preset=../x"], "is not a plain name"),
    Case("train_more_clusters_than_images", [PYTHON, "train.py", "--config", "configs/selfcond_mnist.yaml", "--run-dir",
         "{new}", "data.limit=500", "data.pseudo_labels=1000"], "asks for more clusters than the data set has images (500)"),
    Case("init_from_missing", [*TRAIN, "--run-dir", "{new}", *TINY, "train.init_from={new}-nowhere"],
         "-nowhere' does not exist; give a run folder"),
    Case("init_from_other_network", [*TRAIN, "--run-dir", "{new}", *TINY, "model.g_channels=16", "train.init_from={run}"],
         "G.safetensors' does not fit the configured network"),
    # `accelerate launch --gradient_accumulation_steps 4` sets this variable for its processes
    Case("gradient_accumulation", [*TRAIN, "--run-dir", "{new}", *TINY], "gradient accumulation (4 steps",
         env={"ACCELERATE_GRADIENT_ACCUMULATION_STEPS": "4"}),
    Case("train_config_not_yaml", [PYTHON, "train.py", "--config", "{bad_yaml}", "--run-dir", "{new}"],
         "is not valid YAML"),
    Case("train_config_not_a_mapping", [PYTHON, "train.py", "--config", "{list_yaml}", "--run-dir", "{new}"],
         "expected a mapping of sections"),
    # generate's command line and sources
    Case("generate_num_zero", [*GENERATE, "{run}", "--num", "0", "--out", "{new}"], "--num must be > 0, got 0"),
    Case("generate_without_out", [*GENERATE, "{run}", "--num", "2"], "the following arguments are required: --out"),
    Case("generate_missing_source", [*GENERATE, "{new}", "--out", "{new}.png"], "does not exist"),
    Case("generate_no_checkpoint", [*GENERATE, "{empty}", "--out", "{new}.png"], "has no complete checkpoint"),
    Case("generate_class_out_of_range", [*GENERATE, "{run}", "--class", "3", "--out", "{new}.png"],
         "--class 3 is out of range: this run has 0 classes"),
    Case("generate_device_unknown", [*GENERATE, "{run}", "--device", "quantum", "--out", "{new}.png"],
         "--device 'quantum' is not a device"),
    Case("generate_device_absent", [*GENERATE, "{run}", "--device", "cuda:99", "--out", "{new}.png"], "--device cuda:99"),
    Case("generate_out_is_a_file", [*GENERATE, "{run}", "--num", "2", "--out", "{file}"], "is a file"),
    Case("generate_out_inside_a_file", [*GENERATE, "{run}", "--num", "2", "--out", "{file}/g.png"],
         "cannot be written"),
    # more images than memory holds (2 GiB), or than Pillow opens in one grid (PIL.Image.MAX_IMAGE_PIXELS)
    Case("generate_num_beyond_memory", [*GENERATE, "{run}", "--num", "1000000000", "--out", "{new}"],
         "--num 1000000000 is too many: the 1x28x28 images and their noise are held in memory"),
    Case("generate_num_beyond_one_grid", [*GENERATE, "{run}", "--num", "200000", "--out", "{new}.png"],
         "--num 200000 is too many for one .png grid"),
    Case("generate_seed_beyond_64_bits", [*GENERATE, "{run}", "--seed", "99999999999999999999999", "--out",
                                          "{new}.png"], "--seed must be in [0, 2**64)"),
    Case("generate_seed_negative", [*GENERATE, "{run}", "--seed", "-1", "--out", "{new}"],
         "--seed must be in [0, 2**64)"),
    # the HTML report
    Case("report_without_out_or_table", [*REPORT, "{run}"], "give --out report.html, --table, or both"),
    Case("report_out_inside_a_file", [*REPORT, "{run}", "--out", "{file}/report.html"], "cannot be written"),
    # evaluate's command line and run folders
    Case("evaluate_missing_run", [*EVAL, "{new}"], "does not exist"),
    Case("evaluate_unknown_metric", [*EVAL, "{run}", "--metrics", "fid,nope"], "--metrics: unknown metric nope"),
    Case("evaluate_num_samples_zero", [*EVAL, "{run}", "--num-samples", "0"], "--num-samples must be > 0"),
    Case("evaluate_num_samples_beyond_memory", [*EVAL, "{run}", "--num-samples", "99999999999999"],
         "--num-samples 99999999999999 is too many: every generated image's features and noise are held"),
    Case("evaluate_checkpoints_not_steps", [*EVAL, "{run}", "--checkpoints", "abc"], "--checkpoints 'abc'"),
    Case("evaluate_seed_beyond_64_bits", [*EVAL, "{run}", "--seed", str(2**64)],
         "--seed must be in [0, 2**64)"),
    Case("evaluate_step_not_saved", [*EVAL, "{run}", "--checkpoints", "999", "--metrics", "fid"],
         "no complete checkpoint for step(s) 999"),
]  # fmt: skip


# --------------------------------------------------------------------------- running the table


def case_folder(root: Path, dcgan_run: Path) -> dict:
    """A fresh copy of the finished run, a file, data folders and config files; returns the fill-ins."""
    root.mkdir(parents=True)
    shutil.copytree(dcgan_run, root / "run")
    (root / "notes.txt").write_text("a plain file\n")
    (root / "empty").mkdir()
    (root / "junk").mkdir()
    (root / "junk" / "a.png").write_bytes(b"not a png")
    (root / "locked").mkdir(mode=0o000)
    (root / "bad.yaml").write_text("model: [unclosed\n")
    (root / "list.yaml").write_text("- model\n- data\n")
    paths = {"run": root / "run", "new": root / "new", "file": root / "notes.txt", "empty": root / "empty",
             "junk": root / "junk", "locked": root / "locked", "bad_yaml": root / "bad.yaml",
             "list_yaml": root / "list.yaml"}  # fmt: skip
    return {k: str(v) for k, v in paths.items()}


def fill(args: list, values: dict) -> list:
    return [str(a).format(**values) for a in args]


def folder_state(folder: Path) -> tuple:
    """Files with size and mtime, and every folder: what a failed command must not change."""
    return snapshot(folder), sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_dir())


@pytest.fixture(scope="module")
def outcomes(dcgan_run, tmp_path_factory) -> dict:
    """{case name: (CompletedProcess, state before, state after, case folder)} for every runnable row."""
    root = tmp_path_factory.mktemp("bad_inputs")
    jobs = {}
    for case in CASES:
        if case.skip:
            continue
        folder = root / case.name
        values = case_folder(folder, dcgan_run)
        values["data"] = case.data.format(**values)
        jobs[case.name] = (fill(case.args, values), folder, case.env or {})

    def run_one(name):
        args, folder, env = jobs[name]
        before = folder_state(folder)
        proc = run(args, env=base_env(ACCELERATE_USE_CPU="1", **env), timeout=300)
        return name, (proc, before, folder_state(folder), folder)

    with ThreadPoolExecutor(max_workers=max(2, min(4, os.cpu_count() or 2))) as pool:
        return dict(pool.map(run_one, jobs))


def test_the_table_has_at_least_25_runnable_rows():
    assert len(CASES) >= 25 and len({c.name for c in CASES}) == len(CASES)
    assert sum(c.skip is None for c in CASES) >= 25


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(case, outcomes):
    if case.skip:
        pytest.skip(case.skip)
    proc, before, after, folder = outcomes[case.name]
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-3000:]
    assert case.message in lines[0], lines[0]
    assert after == before, "the command changed the case's folder"
    assert not (folder / "new").exists() and not (folder / "new.png").exists()
    assert not Path("/proc/gan-bad-input-run").exists()

"""Fixtures shared by the test files, and how the tests are spread over pytest-xdist's workers.

The helpers the tests import (commands, tiny settings, snapshots) are in tests/helpers.py.
"""

import os
from pathlib import Path

import pytest
from helpers import TINY, train

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Two workers on two cores: in-process math (Inception, FID's matrix square root) on one thread
    # each, like the commands the tests start (helpers.base_env). Set before torch or numpy is imported.
    for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(variable, "1")

# Under pytest-xdist (`--dist loadfile`: a file's tests share one worker, and so its module-scoped runs)
# the files that take longest start first, so that neither worker is left alone with one at the end.
SLOWEST_FIRST = ["test_family.py", "test_evaluate.py", "test_slurm.py", "test_evaluate_metrics.py",
                 "test_preemption.py", "test_prepare.py", "test_train.py", "test_tracking.py", "test_install.py",
                 "test_multinode.py", "test_checkpoint_safety.py"]  # fmt: skip


def pytest_collection_modifyitems(config, items):
    if os.environ.get("PYTEST_XDIST_WORKER"):
        rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
        items.sort(key=lambda item: rank.get(Path(item.path).name, len(rank)))


@pytest.fixture(scope="session")
def cache(tmp_path_factory) -> Path:
    """The evaluator's cache shared by the test files: the Inception weights are converted once per worker."""
    return tmp_path_factory.getbasetemp() / "gan-cache"


@pytest.fixture(scope="session")
def dcgan_run(tmp_path_factory) -> Path:
    """One tiny finished DCGAN run (with G_ema) through `accelerate launch`, shared by the tests that only read a run.

    Once per session, or once per xdist worker that runs a test using it.
    """
    run_dir = tmp_path_factory.mktemp("runs") / "dcgan"
    train("dcgan_mnist", run_dir, *TINY, launcher=True)
    return run_dir

"""Shared by the entry points: argument parsing whose errors become one line and exit code 2, and
which process prints before Accelerate starts."""

import argparse
import os

from gan.errors import GanError


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a bad argument raises GanError (one line, no usage dump, no traceback)."""

    def error(self, message):
        raise GanError(f"{self.prog}: {message} (see --help)")


def is_main_process() -> bool:
    """Before Accelerate starts: the launcher gives each process its RANK; one process has none."""
    return os.environ.get("RANK", "0") == "0"

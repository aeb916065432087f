"""Argument parsing shared by the entry points: errors become one line and exit code 2."""

import argparse

from gan.errors import GanError


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a bad argument raises GanError (one line, no usage dump, no traceback)."""

    def error(self, message):
        raise GanError(f"{self.prog}: {message} (see --help)")

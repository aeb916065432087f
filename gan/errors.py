"""One user-facing error type, and the guard that turns it into a clean exit."""

import functools
import reprlib
import sys

QUOTE_CHARS = 80  # the most an error line quotes of a user's value
_QUOTER = reprlib.Repr()
_QUOTER.maxlevel, _QUOTER.maxlist, _QUOTER.maxdict = 3, 8, 8
_QUOTER.maxstring = _QUOTER.maxother = QUOTE_CHARS


class GanError(Exception):
    """A problem the user can fix: bad config, bad file, bad argument.

    Its message names the key or file and the legal values. Entry points print
    it as one line and exit non-zero, without a traceback.
    """


def cut(text: str) -> str:
    """text cut to QUOTE_CHARS characters, so an error stays one short line whatever the input."""
    return text if len(text) <= QUOTE_CHARS else text[: QUOTE_CHARS - 3] + "..."


def quote(value) -> str:
    """repr(value) for an error message, shortened level by level (reprlib) and then cut."""
    return cut(_QUOTER.repr(value))


# The commands' exit codes (0: done).
EXIT_USER_ERROR = 2  # bad input: config, arguments, data or run folder; one line on stderr
EXIT_NONFINITE = 3  # a non-finite loss stopped training; the last good checkpoint is kept
EXIT_PREEMPTED = 75  # SIGTERM/SIGUSR1 stopped training after a checkpoint: requeue to resume
EXIT_INTERRUPTED = 130  # Ctrl-C, as a shell reports it (128 + SIGINT); training checkpoints first


def exit_on_user_error(main):
    """Decorate an entry point: a GanError becomes `error: ...` on stderr and exit code 2; Ctrl-C
    that the command does not handle itself becomes one line and exit code 130."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except GanError as err:
            print(f"error: {err}", file=sys.stderr, flush=True)
            sys.exit(EXIT_USER_ERROR)
        except KeyboardInterrupt:
            print("interrupted (Ctrl-C)", file=sys.stderr, flush=True)
            sys.exit(EXIT_INTERRUPTED)

    return wrapper

"""One user-facing error type, and the guard that turns it into a clean exit."""

import functools
import sys


class GanError(Exception):
    """A problem the user can fix: bad config, bad file, bad argument.

    Its message names the key or file and the legal values. Entry points print
    it as one line and exit non-zero, without a traceback.
    """


EXIT_USER_ERROR = 2


def exit_on_user_error(main):
    """Decorate an entry point: a GanError becomes `error: ...` on stderr and exit code 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except GanError as err:
            print(f"error: {err}", file=sys.stderr, flush=True)
            sys.exit(EXIT_USER_ERROR)

    return wrapper

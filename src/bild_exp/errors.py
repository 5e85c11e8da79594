"""The project's own errors and the one-line error handling of its entry points.

Every error the project raises on purpose (a bad parameter, bad data, a missing
checkpoint, an incompatible or busy results folder) derives from :class:`BildError`; its
message is one line naming the parameter, the value and what is accepted. The entry
points (``bild_exp.sweep``, ``train``, ``bench``, ``paper``) print such errors as one line
on stderr instead of a traceback; ``BILD_DEBUG=1`` (or ``HYDRA_FULL_ERROR=1``) shows the
traceback instead.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130  # the shell's code for a process ended by SIGINT
DEBUG_VARIABLES = ("BILD_DEBUG", "HYDRA_FULL_ERROR")


class BildError(Exception):
    """An error whose message is meant for the user as it is (one line)."""


class InvalidParameterError(BildError, ValueError):
    """A parameter, setting or input is out of its accepted range."""


class Interrupted(BildError):
    """Ctrl-C during a run; the message says what was saved and how to resume."""


def debugging() -> bool:
    return any(os.environ.get(name, "") not in ("", "0") for name in DEBUG_VARIABLES)


@contextmanager
def one_line_errors(
    program: str, interrupted_note: Callable[[], str] = lambda: "nothing partial was written"
) -> Iterator[None]:
    """Turn the project's errors and Ctrl-C into one line on stderr and an exit code.

    ``interrupted_note`` says what a Ctrl-C leaves behind when no :class:`Interrupted`
    with a more precise message was raised.
    """
    if debugging():
        yield
        return
    try:
        yield
    except Interrupted as error:
        print(f"{program}: interrupted: {error}", file=sys.stderr)
        raise SystemExit(EXIT_INTERRUPTED) from None
    except KeyboardInterrupt:
        print(f"{program}: interrupted: {interrupted_note()}", file=sys.stderr)
        raise SystemExit(EXIT_INTERRUPTED) from None
    except BildError as error:
        print(f"{program}: error: {first_line(error)}", file=sys.stderr)
        raise SystemExit(EXIT_ERROR) from None


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__

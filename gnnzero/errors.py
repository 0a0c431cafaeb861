"""User-facing errors: one line that names the problem and the fix."""
from __future__ import annotations

import functools
import sys
from typing import Callable, TypeVar

T = TypeVar("T")


class GnnZeroError(ValueError):
    """Bad input or an impossible request; its message is shown as one line."""


def exit_on_user_error(main: Callable[..., T]) -> Callable[..., T]:
    """Run ``main``; turn user errors into a one-line message and exit code 2.

    Programming errors (anything else) keep their traceback on purpose.
    """
    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except (GnnZeroError, ValueError, FileNotFoundError) as exc:
            message = " ".join(str(exc).split())
            print(f"error: {message}", file=sys.stderr, flush=True)
            sys.exit(2)
    return wrapper

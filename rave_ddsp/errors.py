"""The one exception type for problems a user can fix (bad file, bad option, bad config).

Scripts catch :class:`UserError` and print its message without a traceback; anything
else is a bug and keeps its traceback (:func:`script_main` does this for every script).
"""
import functools
import sys
from pathlib import Path
from typing import Callable, Optional


class UserError(Exception):
    """A problem with the user's input. The message names the file or value and what was expected."""


class UnusableFile(UserError):
    """An input file (audio, latents) that cannot be used; ``reason`` says why, without the path,
    so that jobs over many files can skip it and list ``name: reason``."""

    def __init__(self, path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = Path(path), reason


def script_main(main: Callable[..., Optional[int]]) -> Callable[..., int]:
    """Decorate a script's ``main``: a :class:`UserError` becomes one line on stderr
    (``error: <message>``) and exit status 2; ``main``'s own return value (None: 0) is passed on.

    Scripts end with ``sys.exit(main())``; tests call ``main(argv)`` and read the status.
    """
    @functools.wraps(main)
    def run(*args, **kwargs) -> int:
        try:
            return main(*args, **kwargs) or 0
        except UserError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2

    return run

"""Writing files atomically: the one way every writer in the package puts a file in place.

A file is written under a temporary name in the target's folder and renamed over the
target only once complete, so an error, a full disk or Ctrl-C never leaves a truncated
file where a good one was (or a half-written one that looks good).
"""
import json
import os
from pathlib import Path
from typing import Union

PathLike = Union[str, Path]


class atomic_path:
    """``with atomic_path(target) as temporary:`` write ``temporary``; it replaces ``target`` on success only."""

    def __init__(self, target: PathLike):
        self.target = Path(target)

    def __enter__(self) -> Path:
        # a plain name (not mkstemp, whose files are private): the writer creates it with the usual permissions
        self.temporary = self.target.parent / f".{self.target.name}.{os.getpid()}.partial"
        return self.temporary

    def __exit__(self, error_type, error, traceback) -> None:
        if error_type is None:
            os.replace(self.temporary, self.target)
        else:
            self.temporary.unlink(missing_ok=True)


def write_text(path: PathLike, text: str) -> None:
    with atomic_path(path) as temporary:
        temporary.write_text(text)


def write_json(path: PathLike, content: dict, indent: int = 1) -> None:
    write_text(path, json.dumps(content, indent=indent) + "\n")


def save_figure(figure, path: PathLike, **savefig_options) -> None:
    """A matplotlib figure as an image (format from the suffix), atomically."""
    path = Path(path)
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format=path.suffix.lstrip(".") or "png", **savefig_options)

"""The error a user can fix, and how the ``synth`` command line reports it.

``UserError`` is a ``ValueError`` (the project's exception for bad configuration or input, so a
library caller that catches ValueError keeps working): raise it with a message that names the
path, row or field and says what to do. Every ``synth`` command turns a ``ValueError`` or an
``OSError`` (a missing file, a full disk) into one line on stderr, ``error: <message>``, and
exit code 2; anything else is a bug and keeps its traceback. ``CHATUMM_TRACEBACK=1`` shows the
traceback of a reported error too.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")

EXIT_USER_ERROR = 2
REPORTED = (ValueError, OSError)


class UserError(ValueError):
    """Bad input or configuration, with a message that names it and the fix."""


def one_line(err: BaseException) -> str:
    """The error as one line: an OSError as ``<path>: <what>``, others with their whitespace
    (a multi-line pydantic report, say) folded into single spaces."""
    if isinstance(err, OSError) and err.filename is not None and err.strerror:
        return f"{err.filename}: {err.strerror.lower()}"
    return " ".join(str(err).split()) or type(err).__name__


def require_dir(path: str | Path, what: str, fix: str = "") -> Path:
    """``path`` as a Path when it is a directory, else a UserError: ``<what> <path>: <problem>;
    <fix>``."""
    path = Path(path)
    problem = None if path.is_dir() else "not a directory" if path.exists() else "no such directory"
    if problem:
        raise UserError(f"{what} {path}: {problem}" + (f"; {fix}" if fix else ""))
    return path


def require_file(path: str | Path, what: str, fix: str = "") -> Path:
    """``path`` as a Path when it is a file, else a UserError: ``<what> <path>: <problem>;
    <fix>``."""
    path = Path(path)
    problem = None if path.is_file() else "not a file" if path.exists() else "no such file"
    if problem:
        raise UserError(f"{what} {path}: {problem}" + (f"; {fix}" if fix else ""))
    return path


def reported(command: Callable[P, R]) -> Callable[P, R]:
    """Wrap a command so a user error ends it with one line and exit code 2."""
    import typer

    @functools.wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except REPORTED as err:
            if os.environ.get("CHATUMM_TRACEBACK"):
                raise
            typer.echo(f"error: {one_line(err)}", err=True)
            raise typer.Exit(EXIT_USER_ERROR) from None

    return run

"""The one exception a reader raises: a problem with a whole source, reported on one line.

A bad *row* never raises: it becomes a ``Reject`` and the stream goes on. ``SourceError`` is for
what no row can survive (a required column missing from the data, a split that does not
exist, a file that stops being parseable), so the command line can print it as one line naming
the file, the row and the field, and what to change.
"""

from __future__ import annotations


class SourceError(ValueError):
    """A source that cannot be read as configured. ``str()`` is one line."""

    def __init__(
        self, file: str, problem: str, *, row: str = "", field: str = "", fix: str = ""
    ) -> None:
        self.file, self.row, self.field, self.problem, self.fix = file, row, field, problem, fix
        where = " ".join(p for p in (file, row) if p)
        what = f"{field}: {problem}" if field else problem
        message = f"{where}: {what}" if where else what
        if fix:
            message += f"; {fix}"
        super().__init__(" ".join(message.split()))  # never more than one line

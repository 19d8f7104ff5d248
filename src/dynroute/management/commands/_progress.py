"""The progress bar of ``manage.py dynroute`` on a terminal: rich's, when it is installed.

``pip install "django-dynroute[cli]"`` installs rich. Without it, or when the output is
not a terminal (a log, CI, a pipe), the command prints plain lines only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, TextIO, cast

if TYPE_CHECKING:
    from django.core.management.base import OutputWrapper

__all__ = ["Bar", "bar"]


class Bar(Protocol):
    """A progress bar: one step per database, lines printed above it."""

    def advance(self) -> None:
        """One database more is done."""
        ...

    def print(self, line: str) -> None:
        """Print ``line`` above the bar."""
        ...

    def close(self) -> None:
        """Leave the bar, complete, on the terminal."""
        ...


def bar(output: OutputWrapper, total: int, label: str) -> Bar | None:
    """A bar on ``output`` if it is a terminal and rich is installed, else ``None``."""
    if not output.isatty():
        return None
    try:
        from rich.console import Console  # noqa: PLC0415 - optional: the cli extra
        from rich.progress import (  # noqa: PLC0415
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )
    except ImportError:
        return None
    # The stream Django's wrapper writes to (django-stubs types it as a callable).
    stream = cast("TextIO", output._out)  # noqa: SLF001
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(file=stream, force_terminal=True),
    )
    task = progress.add_task(label, total=total)
    progress.start()

    class _RichBar:
        def advance(self) -> None:
            progress.advance(task)

        def print(self, line: str) -> None:
            progress.console.print(line, markup=False, highlight=False, soft_wrap=True)

        def close(self) -> None:
            progress.stop()

    return _RichBar()

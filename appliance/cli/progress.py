"""Rich progress bars for long jobs; the core packages only see a `Callable[[int], None]`.

Without a terminal on stderr no bar is shown, and rich is not even imported (a command in a script or a
pipeline starts that much sooner)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.progress import Progress


def _ignore(_n: int) -> None:
    """`advance` where no bar is shown."""


@contextmanager
def _bars(*columns: str) -> Iterator[Progress | None]:
    """A transient display on stderr with the named rich.progress columns; None when stderr is no terminal."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich import progress as rp
    from rich.console import Console

    made: list[Any] = [rp.TextColumn(text) if "{" in text else getattr(rp, text)() for text in columns]
    with rp.Progress(*made, console=Console(stderr=True), transient=True) as shown:
        yield shown


@contextmanager
def byte_progress(description: str, total: int) -> Iterator[Callable[[int], None]]:
    """A bar over `total` bytes on stderr; yields `advance(n)`."""
    with _bars(
        "{task.description}", "BarColumn", "DownloadColumn", "TransferSpeedColumn", "TimeRemainingColumn"
    ) as shown:
        yield _ignore if shown is None else _advancer(shown, description, total)


@contextmanager
def count_progress(description: str, total: int | None) -> Iterator[Callable[[int], None]]:
    """A bar over `total` items (records, files); yields `advance(n)`."""
    with _bars("{task.description}", "BarColumn", "{task.completed}/{task.total}", "TimeRemainingColumn") as shown:
        yield _ignore if shown is None else _advancer(shown, description, total)


@contextmanager
def phase_progress() -> Iterator[Callable[[str, int], Callable[[int], None]]]:
    """One display for a job of several phases (a restore reads its archive, then verifies its chain): yields
    `start(description, total)`, which adds a bar and returns its `advance(n)`."""
    with _bars("{task.description}", "BarColumn", "TaskProgressColumn", "TimeRemainingColumn") as shown:
        yield (lambda _d, _t: _ignore) if shown is None else (lambda d, t: _advancer(shown, d, t))


def _advancer(shown: Progress, description: str, total: int | None) -> Callable[[int], None]:
    task = shown.add_task(description, total=total)
    return lambda n: shown.advance(task, n)

"""Tables for people at a terminal and for scripts reading a pipe (no truncation when not a TTY)."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.table import Table


def print_table(table: Table) -> None:
    """Print `table` at the terminal's width, or unclipped when stdout is a pipe or file."""
    console = Console() if sys.stdout.isatty() else Console(width=250, no_color=True)
    console.print(table)

"""One way every `feddqc` command prints a table."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table


def show_table(title: str, header: Sequence[str], rows: Sequence[Sequence[Any]],
               right_align: bool = False) -> None:
    """Print rows under a header as a rich table (cells shown with str())."""
    table = Table(title=title)
    for name in header:
        table.add_column(name, justify="right" if right_align else "left")
    for row in rows:
        table.add_row(*(str(c) for c in row))
    Console(width=140).print(table)

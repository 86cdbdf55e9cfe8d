"""Turning resources and status into text: kubectl-style tables, YAML, JSON, names.

Tables are rich tables without borders, columns three spaces apart, headers bold on a
terminal and plain in a pipe, so that `myc get ... | awk` works. The console is made
wider than any table so that rich never wraps or truncates a cell: as with kubectl, a
long line is the terminal's to wrap. Cells are `Text`, never markup, so that a label
like `[x]` prints as itself. YAML and JSON are written as plain text, never through
rich, for the same reason.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from typing import Any, TextIO

import yaml
from rich.console import Console
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

# Spaces at the end of a line, possibly followed by the codes that end a style.
_TRAILING_BLANKS = re.compile(r" +((?:\x1b\[[0-9;]*m)*)$")
# Wider than any table we print: rich must not wrap cells (see the module docstring).
CONSOLE_WIDTH = 100_000
COLUMN_GAP = 3
# Values of `Label: value` blocks start in this column, so that separate blocks align.
FIELD_LABEL_WIDTH = 14


def console_for(file: TextIO | None = None) -> Console:
    """A console on `file` (default: the current sys.stdout) that never wraps tables."""
    return Console(file=file, width=CONSOLE_WIDTH, highlight=False, soft_wrap=False)


def column_widths(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> list[int]:
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    return widths


def print_table(
    console: Console,
    headers: Sequence[str],
    rows: Iterable[Sequence[str]],
    *,
    min_widths: Sequence[int] | None = None,
    show_header: bool = True,
    indent: int = 0,
) -> None:
    """Print rows under headers; `min_widths` keeps later rows aligned with earlier ones."""
    table = Table(
        box=None,
        show_edge=False,
        pad_edge=False,
        padding=(0, COLUMN_GAP, 0, 0),
        show_header=show_header,
        header_style="bold",
    )
    for i, header in enumerate(headers):
        table.add_column(
            header, no_wrap=True, min_width=min_widths[i] if min_widths is not None else None
        )
    for row in rows:
        table.add_row(*(Text(cell) for cell in row))
    # Rich pads the last column to its width; kubectl's lines end with their last cell.
    with console.capture() as captured:
        console.print(Padding(table, (0, 0, 0, indent), expand=False) if indent else table)
    for line in captured.get().splitlines():
        console.file.write(_TRAILING_BLANKS.sub(r"\1", line) + "\n")


def print_fields(console: Console, fields: Sequence[tuple[str, str]]) -> None:
    """`Label:  value` lines with values aligned, as in kubectl describe."""
    width = max([FIELD_LABEL_WIDTH, *(len(label) + 2 for label, _ in fields)])
    for label, value in fields:
        console.print(Text(f"{label + ':':<{width}}{value}"))


def yaml_text(document: Any) -> str:
    """One YAML document, keys in the order the controller sent them."""
    return yaml.safe_dump(document, sort_keys=False, default_flow_style=False, allow_unicode=True)


def yaml_documents(documents: Iterable[Any]) -> str:
    """Several YAML documents separated by `---` lines."""
    return "---\n".join(yaml_text(document) for document in documents)


def json_text(document: Any) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def indented(text: str, spaces: int = 2) -> str:
    pad = " " * spaces
    return "".join(pad + line if line.strip() else line for line in text.splitlines(True))


def duration_text(seconds: float) -> str:
    """`3d4h`, `2h5m`, `4m10s`, `12s`: kubectl's two most significant units."""
    total = max(0, int(seconds))
    days, rest = divmod(total, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h"
    if hours:
        return f"{hours}h{minutes}m"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"

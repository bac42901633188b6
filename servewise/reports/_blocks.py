"""The pieces a report section is made of: tables, plots, facts, notes, badges.

Each kind's view turns an artifact into a :class:`Section` holding a list of blocks;
the templates only lay the blocks out (``templates/_blocks.j2``), so what a section
shows is decided in Python and every string reaches the page through autoescaping.
A numeric :class:`Cell` keeps its raw value beside the text (``data-value``), so a
reader or a test can check the page's numbers against the artifact's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from servewise.reports import _format as fmt

__all__ = [
    "Cell",
    "Row",
    "Table",
    "Plot",
    "Facts",
    "Notes",
    "Badge",
    "Heading",
    "Block",
    "Section",
    "num",
    "txt",
    "ok_cell",
    "badge",
]


@dataclass(frozen=True)
class Cell:
    """One table cell: its text, and for numbers the raw value (right-aligned)."""

    text: str
    value: float | None = None
    num: bool = False
    status: str | None = None
    href: str | None = None
    """A link (an anchor in the page or a relative file); None for plain text."""
    title: str | None = None
    """A tooltip with the full text of a shortened cell."""


@dataclass(frozen=True)
class Row:
    cells: list[Cell]
    cls: str | None = None
    """Row highlight: ``winner``, ``front``, ``muted`` or a status."""


@dataclass(frozen=True)
class Table:
    caption: str
    headers: list[str]
    """Column names, each with its unit when the column has one."""
    rows: list[Row]
    note: str | None = None
    block: str = "table"


@dataclass(frozen=True)
class Plot:
    src: str
    """A ``data:image/png;base64,...`` URI."""
    alt: str
    caption: str
    block: str = "plot"


@dataclass(frozen=True)
class Facts:
    """Label/value pairs (a definition list)."""

    items: list[tuple[str, Cell]]
    caption: str | None = None
    block: str = "facts"


@dataclass(frozen=True)
class Notes:
    items: list[str]
    level: str = "warn"
    """``warn``, ``fail`` or ``info``."""
    caption: str | None = None
    block: str = "notes"


@dataclass(frozen=True)
class Badge:
    """A verdict: a coloured word (PASS, FAIL, INVALID) and one line of detail."""

    status: str
    label: str
    detail: str | None = None
    block: str = "badge"


@dataclass(frozen=True)
class Heading:
    text: str
    block: str = "heading"


Block = Table | Plot | Facts | Notes | Badge | Heading


@dataclass
class Section:
    """One artifact's part of the page."""

    kind: str
    kind_label: str
    title: str
    headline: str
    """One line for the overview: the artifact's main result."""
    status: str | None = None
    """pass / fail / invalid / warn, shown as a badge in the overview; None when there is no verdict."""
    verdict: Badge | None = None
    """Shown first in the section, large."""
    blocks: list[Block] = field(default_factory=list)
    anchor: str = ""
    file_href: str = ""
    file_label: str = ""

    def add(self, *blocks: Block | None) -> None:
        self.blocks.extend(b for b in blocks if b is not None)


def num(v: Any, formatter: Callable[[Any], str] = fmt.plain, *, status: str | None = None) -> Cell:
    """A right-aligned number cell; its text is ``formatter(v)``, its value the raw number."""
    return Cell(text=formatter(v), value=fmt.number(v), num=True, status=status)


def txt(v: Any, *, href: str | None = None, status: str | None = None, limit: int | None = None) -> Cell:
    """A text cell (``—`` for None); ``limit`` shortens long text and keeps it whole in the tooltip."""
    s = fmt.plain(v)
    if limit is not None and len(s) > limit:
        return Cell(text=s[: limit - 1] + "…", href=href, status=status, title=s)
    return Cell(text=s, href=href, status=status)


def ok_cell(ok: bool | None, *, yes: str = "pass", no: str = "FAIL", unknown: str = "unknown") -> Cell:
    """A pass/fail cell; None (not judged) is ``unknown``, never a pass."""
    if ok is None:
        return Cell(text=unknown, status="unknown")
    return Cell(text=yes if ok else no, status="pass" if ok else "fail")


def badge(status: str, detail: str | None = None) -> Badge:
    """A verdict badge: ``pass`` → PASS, ``fail`` → FAIL, ``invalid`` → INVALID, anything else → UNKNOWN."""
    if status not in ("pass", "fail", "invalid", "warn"):
        status = "unknown"
    return Badge(status=status, label=status.upper(), detail=detail)

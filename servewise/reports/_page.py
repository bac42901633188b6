"""``servewise report``: one self-contained HTML page for any artifacts.

The page holds everything it shows: CSS inline, plots as PNG ``data:`` URIs, no script,
and a Content-Security-Policy that forbids loading anything else, so it reads offline
and can be attached to a CI run. Its links (to each artifact, its ``requests.csv``, the
plan's deploy files) are relative to the page, so a folder moved whole keeps working.
Every string from an artifact is escaped by Jinja2's autoescaping.

A ``loop.json`` (what ``servewise demo`` writes), or the folder holding it, stands for
every stage it lists: profile, plan, predicted, measured and validation.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import jinja2

from servewise import __version__
from servewise.errors import ArtifactError
from servewise.io import atomic_write_text, read_json
from servewise.reports._artifacts import load_artifact
from servewise.reports._blocks import Badge, Section

__all__ = ["render_report", "write_report", "expand_inputs"]

_LOOP_STAGES = ("profile", "plan", "predicted", "measured", "validation")


def _env() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("servewise.reports", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=False,
        lstrip_blocks=False,
    )


def _loop_file(p: Path) -> Path | None:
    if p.is_file() and p.name == "loop.json":
        return p
    if p.is_dir() and (p / "loop.json").is_file():
        return p / "loop.json"
    return None


def expand_inputs(paths: Sequence[str | Path]) -> list[Path]:
    """The artifact paths, with each ``loop.json`` (or its folder) replaced by its stages."""
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        loop = _loop_file(p)
        if loop is None:
            out.append(p)
            continue
        doc = read_json(loop, "loop file")
        arts = doc.get("artifacts") if isinstance(doc, dict) else None
        if not isinstance(doc, dict) or doc.get("kind") != "loop" or not isinstance(arts, dict):
            raise ArtifactError(f"{loop}: expected a servewise loop file (kind 'loop' with 'artifacts')")
        for stage in _LOOP_STAGES:
            rel = arts.get(stage)
            if isinstance(rel, str):
                out.append(loop.parent / rel)
    return out


def _href(target: Path, page_dir: Path) -> str:
    rel = os.path.relpath(target.resolve(), page_dir.resolve())
    return quote(Path(rel).as_posix())


def _page_verdicts(sections: list[Section]) -> list[Badge]:
    """What heads the page: each validation's verdict; without one, each plan's."""
    for kind in ("validation", "plan"):
        found = [s for s in sections if s.kind == kind and s.verdict is not None]
        if found:
            return [
                Badge(
                    status=s.verdict.status,  # type: ignore[union-attr]
                    label=f"{s.kind_label} {s.verdict.label}",  # type: ignore[union-attr]
                    detail=s.verdict.detail,  # type: ignore[union-attr]
                )
                for s in found
            ]
    return []


def render_report(artifacts: Sequence[str | Path], page_path: str | Path, *, title: str | None = None) -> str:
    """The HTML of the page that will lie at ``page_path`` (links are relative to it)."""
    from servewise.reports._views import section_for

    paths = expand_inputs(artifacts)
    if not paths:
        raise ArtifactError("report: no artifact given")
    page_dir = Path(page_path).parent
    sections: list[Section] = []
    for i, p in enumerate(paths):
        a = load_artifact(p)
        s = section_for(a, lambda target: _href(target, page_dir))
        s.anchor = f"{a.kind.replace('_', '-')}-{i + 1}"
        s.file_href = _href(a.path, page_dir)
        s.file_label = str(a.path)
        sections.append(s)
    if title is None:
        title = "servewise report: " + ", ".join(dict.fromkeys(s.kind_label.lower() for s in sections))
    return (
        _env()
        .get_template("page.html.j2")
        .render(
            title=title,
            version=__version__,
            created=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            sections=sections,
            verdicts=_page_verdicts(sections),
        )
    )


def write_report(artifacts: Sequence[str | Path], out: str | Path, *, title: str | None = None) -> Path:
    """Write the page for ``artifacts`` to ``out`` atomically; return its path."""
    path = Path(out)
    if path.is_dir():
        raise ArtifactError(f"{path}: is a folder; --out takes the HTML file to write, e.g. {path / 'report.html'}")
    html = render_report(artifacts, path, title=title)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, html)
    return path

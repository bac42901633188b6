"""The gate's verdict for CI: a Markdown job summary and JUnit XML.

Every string that came from a user — artifact paths, model and variant names, case
names, SLO expressions, messages quoting them — is escaped: in Markdown, HTML
metacharacters become entities, ``|`` cannot split a table cell and line breaks cannot
end a row, so a name like ``<script>|x`` shows as text. The XML is built with
:mod:`xml.etree.ElementTree` (which escapes), after removing the control characters
XML 1.0 cannot hold.
"""

from __future__ import annotations

import html
import math
import re
import xml.etree.ElementTree as ET
from typing import TYPE_CHECKING

from servewise.reports._format import seconds

if TYPE_CHECKING:
    from servewise.reports._gate_result import Check, GateResult

__all__ = ["md_escape", "render_markdown", "render_junit"]

_MD_SPECIAL = re.compile(r"([\\`*_\[\]{}~#!])")
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_ORDER = {"fail": 0, "missing": 1, "pass": 2}
_ICON = {"fail": "❌ fail", "missing": "⚠️ missing", "pass": "✅ pass"}


def md_escape(text: object) -> str:
    """``text`` safe inside a Markdown table cell: no HTML, no cell or row break, no emphasis."""
    s = " ".join(str(text).split())  # newlines and tabs end a table row: make them spaces
    s = _MD_SPECIAL.sub(r"\\\1", s)
    s = html.escape(s, quote=True)
    return s.replace("|", "&#124;")


def _num(v: float | None, unit: str | None) -> str:
    if v is None or not math.isfinite(v):
        return ""
    if unit == "s":
        return seconds(v)
    if unit == "ratio":
        return f"{v:.2%}"
    return f"{v:.4g}"


def _ratio_cell(c: Check) -> str:
    if c.ratio is None:
        return ""
    text = f"×{c.ratio:.3f}"
    if c.ci_low is not None and c.ci_high is not None:
        text += f" [{c.ci_low:.3f}, {c.ci_high:.3f}]"
    return text


def _p_cell(c: Check) -> str:
    if c.p_value is None:
        return ""
    text = f"{c.p_value:.2g}"
    if c.p_holm is not None:
        text += f" ({c.p_holm:.2g})"
    return text


def _limit_cell(c: Check) -> str:
    if c.threshold is None:
        return ""
    if c.kind == "slo":
        return md_escape(_num(c.threshold, c.unit))
    sign = "+" if c.better != "higher" else "−"
    if c.unit == "ratio" and c.ratio is None and c.kind == "regression":
        return f"{sign}{c.threshold:.4g}"
    return f"{sign}{c.threshold:.0%}"


def render_markdown(r: GateResult) -> str:
    counts = r.counts()
    total = len(r.checks)
    if r.passed:
        head = f"## ✅ servewise gate: PASS — {total} of {total} checks passed"
    else:
        bits = [f"{counts['fail']} failed"] if counts["fail"] else []
        bits += [f"{counts['missing']} missing"] if counts["missing"] else []
        head = f"## ❌ servewise gate: FAIL — {', '.join(bits) or 'no checks'} of {total} checks"
    s = r.settings
    lines = [head, ""]
    what = f"**current** {md_escape(r.current)}"
    if r.baseline is not None:
        what = f"**baseline** {md_escape(r.baseline)} · " + what
    lines.append(f"{what} · {md_escape(r.artifact_kind)}")
    if r.baseline is not None and "max_regression" in s:
        lines.append("")
        lines.append(
            f"Regression: worse by more than {s['max_regression']:.0%} with {s['confidence']:.0%} confidence "
            f"and significant at α = {s['alpha']:g} (Mann–Whitney U, Holm-adjusted); ratio = current / baseline."
        )
        speeds = [c.speed_ratio for c in r.checks if c.speed_ratio is not None]
        if speeds:
            lines.append(
                f"Profile ratios are speed-adjusted: the calibration kernel ran {min(speeds) - 1:+.1%} to "
                f"{max(speeds) - 1:+.1%} slower in the current run than in the baseline, and that is divided out."
            )
    lines += [
        "",
        "| status | check | baseline | current | ratio [CI] | p (Holm) | limit | n | detail |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for c in sorted(r.checks, key=lambda c: _ORDER[c.status]):
        n = f"{c.n_baseline}/{c.n_current}" if c.n_baseline is not None or c.n_current is not None else ""
        n = n.replace("None", "–")
        cells = [
            _ICON[c.status],
            md_escape(c.name),
            md_escape(_num(c.baseline, c.unit)),
            md_escape(_num(c.current, c.unit)),
            _ratio_cell(c),
            _p_cell(c),
            _limit_cell(c),
            n,
            md_escape(c.message),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    if not r.checks:
        lines.append("| ⚠️ missing | (no checks) | | | | | | | nothing was compared |")
    return "\n".join(lines) + "\n"


def _xml_text(text: object) -> str:
    return _XML_INVALID.sub("\ufffd", str(text))


def render_junit(r: GateResult) -> str:
    counts = r.counts()
    failures = counts["fail"] + counts["missing"]
    root = ET.Element("testsuites", name="servewise gate", tests=str(len(r.checks)), failures=str(failures), errors="0")
    suite = ET.SubElement(
        root, "testsuite", name="servewise gate", tests=str(len(r.checks)), failures=str(failures), errors="0",
        skipped="0", time="0",
    )  # fmt: skip
    props = ET.SubElement(suite, "properties")
    fields: dict[str, object] = {"current": r.current, "baseline": r.baseline or "", "artifact_kind": r.artifact_kind}
    fields.update({k: v for k, v in r.settings.items() if k != "slos"})
    for k, v in fields.items():
        ET.SubElement(props, "property", name=k, value=_xml_text(v))
    for c in r.checks:
        case = ET.SubElement(suite, "testcase", classname=f"servewise.gate.{c.kind}", name=_xml_text(c.name), time="0")
        if c.status != "pass":
            failure = ET.SubElement(case, "failure", type=c.status, message=_xml_text(c.message))
            failure.text = _xml_text(_details(c))
        else:
            out = ET.SubElement(case, "system-out")
            out.text = _xml_text(c.message)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def _details(c: Check) -> str:
    keys = ("metric", "baseline", "current", "ratio", "ci_low", "ci_high", "p_value", "p_holm", "threshold",
            "n_baseline", "n_current")  # fmt: skip
    parts = [f"{k}={getattr(c, k)}" for k in keys if getattr(c, k) is not None]
    return f"{c.status}: {c.message}" + ("\n" + ", ".join(parts) if parts else "")

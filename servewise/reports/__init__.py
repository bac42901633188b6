"""Reports and the regression gate: read any artifact; write HTML; give a CI verdict."""

from servewise.reports._artifacts import KINDS, Artifact, load_artifact
from servewise.reports._gate import Check, GateResult, run_gate
from servewise.reports._page import render_report, write_report

__all__ = ["KINDS", "Artifact", "load_artifact", "Check", "GateResult", "run_gate", "render_report", "write_report"]

"""The gate's result as ``servewise.reports`` returns it: the spine's record
(:class:`servewise.results.GateResult`, one :class:`~servewise.results.Check` per judged
item) with the CI outputs, :meth:`GateResult.markdown` and :meth:`GateResult.junit_xml`."""

from __future__ import annotations

from servewise import results
from servewise.results import Check, CheckKind, Status

__all__ = ["CheckKind", "Status", "Check", "GateResult"]


class GateResult(results.GateResult):
    """The gate's checks and verdict. ``exit_code`` is 0 when every check passed, else 1."""

    def markdown(self) -> str:
        """A CI job summary: the verdict line, then the checks, failing and missing first."""
        from servewise.reports._gate_out import render_markdown

        return render_markdown(self)

    def junit_xml(self) -> str:
        """One testsuite "servewise gate", one testcase per check; fail and missing are failures."""
        from servewise.reports._gate_out import render_junit

        return render_junit(self)

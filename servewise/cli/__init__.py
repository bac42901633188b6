"""The ``servewise`` command line: a thin Typer app over the library.

Each command parses its options, calls one library entry point (importing that stage
only when the command runs) and prints the outcome. This module alone decides exit
codes: 0 success, 1 an SLO violation / regression / failed validation, 2 unusable input or
usage, 3 an invalid measurement (the load generator fell behind).
"""

from __future__ import annotations

import importlib

from servewise.cli._common import app

# Each module registers its commands on ``app``; this order is the order of ``--help``.
for _module in ("_simulate", "_advise", "_trace", "_deployment", "_profile", "_serve", "_loadtest", "_report"):
    importlib.import_module(f"servewise.cli.{_module}")

__all__ = ["app", "main"]


def main() -> None:
    """Console-script entry point."""
    app()

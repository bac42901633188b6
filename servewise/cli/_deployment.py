"""``servewise deployment check / example``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from servewise.cli._common import (
    _errors,
    deployment_app,
    err,
)


@deployment_app.command("check")
def deployment_check(path: Annotated[Path, typer.Argument(help="Deployment YAML.")]) -> None:
    """Validate a deployment file; print it back with defaults filled in (the verdict goes to stderr).

    ``servewise deployment check D.yaml > filled.yaml`` saves a file that loads.
    """
    from servewise.config import dump_deployment, load_deployment

    with _errors():
        dep = load_deployment(path)
    err.print(f"[green]ok[/]: {escape(str(path))}")
    text = dump_deployment(dep)
    sys.stdout.write(text if text.endswith("\n") else text + "\n")


@deployment_app.command("example")
def deployment_example() -> None:
    """Print the built-in example deployment (a starting point to edit)."""
    from importlib.resources import files

    sys.stdout.write((files("servewise") / "data" / "default_deployment.yaml").read_text())

"""``locustfile.py``: an open-loop Locust replay of ``trace.csv`` against the deployment.

The file is :mod:`advisor._deploy._locustfile` (linted and type-checked with the
package) with its settings block filled in for the plan: the endpoint
(``/v1/completions`` for an LLM, ``/predict`` otherwise) and the model name.
"""

from __future__ import annotations

import re
from importlib import resources

from servewise.advisor._deploy._common import Target

_SETTINGS = re.compile(r"(# --- servewise settings: begin ---\n).*?(# --- servewise settings: end ---\n)", re.S)


def settings(t: Target) -> dict[str, object]:
    """The constants of the settings block."""
    return {
        "DEPLOYMENT": t.dep.name,
        "ENDPOINT": "/v1/completions" if t.llm else "/predict",
        "LLM": t.llm,
        "MODEL": t.model_name,
    }


def locustfile(t: Target) -> str:
    """The ``locustfile.py`` text."""
    template = resources.files("servewise.advisor._deploy").joinpath("_locustfile.py").read_text()
    block = "".join(f"{k} = {v!r}\n" for k, v in settings(t).items())
    text, n = _SETTINGS.subn(lambda m: m.group(1) + block + m.group(2), template, count=1)
    if n != 1:  # pragma: no cover - the template is part of the package
        raise RuntimeError("the locustfile template has lost its settings block")
    return text

"""The README stays true: its commands, its YAML example, its schema reference."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from servewise import config, hardware, profile, space
from servewise.config import parse_deployment

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _bash_blocks() -> list[str]:
    return [b.strip() for b in re.findall(r"```bash\n(.*?)```", README, flags=re.S)]


def test_exactly_two_setup_commands_and_ci_runs_the_test_one() -> None:
    blocks = _bash_blocks()
    assert len(blocks) == 2
    demo, tests = blocks
    assert "servewise demo" in demo and "pytest" in tests
    ci = (ROOT / ".ci" / "run").read_text()
    assert tests in ci.splitlines()


def test_yaml_example_is_a_valid_deployment() -> None:
    blocks = re.findall(r"```yaml\n(.*?)```", README, flags=re.S)
    assert blocks
    dep = parse_deployment(yaml.safe_load(blocks[0]), "README")
    assert dep.balancer.policy == "p2c"


@pytest.mark.parametrize("module", [config, profile, hardware, space], ids=lambda m: m.__name__)
def test_every_config_and_artifact_field_is_documented(module) -> None:
    models = [
        getattr(module, name)
        for name in module.__all__
        if isinstance(getattr(module, name), type) and issubclass(getattr(module, name), BaseModel)
    ]
    missing = [
        f"{m.__name__}.{field}"
        for m in models
        for field in m.model_fields
        if f"`{field}`" not in README
    ]
    assert not missing, f"fields missing from the README: {missing}"

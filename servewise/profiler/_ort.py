"""ONNX Runtime runner (imports onnxruntime and numpy, never torch)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from servewise.errors import ProfileError
from servewise.profiler._inputs import Reset, Run, Runner, grid_ids, mean_pool
from servewise.profiler._spec import ModelSpec
from servewise.profiler._variants import VariantDef

__all__ = ["OrtRunner", "build_ort_runner"]


class OrtRunner(Runner):
    def __init__(
        self,
        path: str,
        loaded_kind: str,
        family: str,
        vocab: int,
        threads: int,
        acc: dict[str, np.ndarray],
        tiny_cfg: dict[str, int] | None,
    ):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        self.s = ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])
        self.names = [i.name for i in self.s.get_inputs()]
        self.kind = loaded_kind
        self.family = family
        self.vocab = vocab
        self.acc = acc
        self.cfg = tiny_cfg

    def _cache(self, batch: int, ctx: int) -> tuple[np.ndarray, np.ndarray]:
        assert self.cfg is not None
        c = self.cfg
        shape = (c["n_layer"], batch, c["n_head"], ctx, c["n_embd"] // c["n_head"])
        rng = np.random.default_rng(ctx * 7 + batch)
        k = (rng.standard_normal(shape) * 0.5).astype(np.float32)
        v = (rng.standard_normal(shape) * 0.5).astype(np.float32)
        return k, v

    def _feed(self, ids: np.ndarray, ctx: int = 0, mask: np.ndarray | None = None) -> dict[str, np.ndarray]:
        if self.family == "tiny":
            k, v = self._cache(ids.shape[0], ctx)
            return {"input_ids": ids, "past_k": k, "past_v": v}
        feed = {self.names[0]: ids}
        if len(self.names) > 1:
            feed[self.names[1]] = mask if mask is not None else np.ones_like(ids)
        return feed

    def _run(self, feed: dict[str, np.ndarray]) -> Run:
        s = self.s

        def run() -> None:
            s.run(None, feed)

        return run

    def forward(self, batch: int, seq: int) -> tuple[Run, Reset]:
        return self._run(self._feed(grid_ids(self.vocab, batch, seq))), None

    prefill = forward

    def decode(self, batch: int, ctx: int) -> tuple[Run, Reset]:
        return self._run(self._feed(grid_ids(self.vocab, batch, 1), ctx)), None

    def outputs(self) -> np.ndarray:
        ids = self.acc["input_ids"]
        out = self.s.run(None, self._feed(ids, 0, self.acc.get("attention_mask")))[0]
        if self.kind == "encoder":
            return mean_pool(out.astype(np.float64), self.acc["attention_mask"])
        if self.kind == "decoder":
            return out.astype(np.float32)
        return out.reshape(ids.shape[0], -1)


def build_ort_runner(
    spec: ModelSpec, variant: VariantDef, workdir: Path, threads: int, onnx_paths: dict[str, str], model_kind: str
) -> tuple[Runner, int, int | None]:
    """Open the exported ONNX file: (runner, weights bytes on disk, KV bytes per token)."""
    path = onnx_paths.get(variant.name)
    if not path:
        raise ProfileError(f"{variant.name}: no ONNX file was exported for {spec.text}")
    tiny_cfg = json.loads((workdir / "tiny-gpt2" / "config.json").read_text()) if spec.kind == "tiny-gpt2" else None
    acc = dict(np.load(workdir / "reference.npz"))
    vocab = int(acc.pop("vocab_size", np.array(100)))
    acc.pop("outputs", None)
    family = "tiny" if spec.kind == "tiny-gpt2" else ("hf" if spec.kind in ("hf", "minilm") else spec.kind)
    runner = OrtRunner(path, model_kind, family, vocab, threads, acc, tiny_cfg)
    size = os.path.getsize(path) + sum(os.path.getsize(p) for p in Path(path).parent.glob(Path(path).name + ".data"))
    kv = None
    if tiny_cfg:
        kv = 2 * tiny_cfg["n_layer"] * tiny_cfg["n_embd"] * 4
    return runner, size, kv

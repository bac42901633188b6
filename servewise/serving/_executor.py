"""Executors: what runs one batch inside a replica worker.

- :class:`SyntheticExecutor` sleeps each batch's service time, drawn from the same
  models as the simulator (:mod:`servewise.service`); it never imports torch.
- :class:`TorchExecutor` runs the profiled variant for real, built exactly as the
  profiler builds it (:mod:`profiler._models`), in a pool of one thread per slot so the
  event loop keeps answering while a batch runs.

An executor turns a request into an :class:`Item` (:meth:`prepare`, on the event loop;
a request it cannot serve raises :class:`RequestError`, an HTTP 422), and runs a batch
of items (:meth:`run`), calling ``emit(member, token_id)`` on the event loop as soon as
each generated token exists. Times are seconds.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from servewise.config import Deployment
from servewise.errors import ConfigError, MissingExtraError, ServewiseError
from servewise.profile import Variant
from servewise.service import build_service

__all__ = [
    "Item",
    "Output",
    "Emit",
    "Executor",
    "RequestError",
    "SyntheticExecutor",
    "TorchExecutor",
    "build_executor",
]

log = logging.getLogger("servewise.serving.worker")

Emit = Callable[[int, int], None]
"""``emit(member, token_id)``: member ``member`` of the batch has a new token (event-loop thread)."""

_WARMUP_TOKENS = 8
"""Prompt tokens of the warm-up request that ends a real cold start."""
_ID_SEED = 1234
"""Seed of the deterministic token ids of a request that sends none (``profiler._inputs.fixed_inputs``)."""


class RequestError(ServewiseError):
    """A request this replica cannot serve as sent (HTTP 422); names the field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True, slots=True)
class Item:
    """One request as an executor runs it."""

    input_tokens: int
    """Prompt / input length in tokens (after tokenizing and truncating), >= 1."""
    output_tokens: int
    """Tokens to generate (decoders; synthetic placeholders otherwise), >= 0."""
    token_ids: tuple[int, ...] | None = None
    """The ids a real model runs (``input_tokens`` of them); None in synthetic mode."""


@dataclass(frozen=True, slots=True)
class Output:
    """The result of one batch member; exactly the field of the model's kind is set."""

    output_token_ids: list[int] | None = None
    embedding: list[float] | None = None
    output: list[float] | None = None


class Executor(Protocol):
    """Runs batches for one replica."""

    kind: str
    """``decoder``, ``encoder`` or ``classic`` (a profiled model), or ``distribution``."""

    async def load(self) -> None:
        """The cold start: load the model and warm it up (synthetic: sleep the cold start)."""
        ...

    def prepare(
        self, input_tokens: int | None, output_tokens: int, token_ids: list[int] | None, text: str | None
    ) -> Item:
        """The item a request runs as; :class:`RequestError` when this replica cannot serve it."""
        ...

    def streams(self) -> bool:
        """Whether a request may ask for its tokens as they are generated."""
        ...

    def limits(self) -> dict[str, Any]:
        """What the router may check up front: ``kind``, ``window_tokens`` and ``vocab_size`` (None: unknown)."""
        ...

    async def run(self, items: Sequence[Item], emit: Emit | None) -> list[Output]:
        """Run one batch; ``emit`` (None when no member streams) gets every token as it exists."""
        ...

    def close(self) -> None:
        """Release threads and memory (after the last batch)."""
        ...


def build_executor(
    deployment: Deployment, *, mode: str, speed_factor: float, concurrency: int, threads: int, seed: int, workdir: Path
) -> Executor:
    """The executor for ``mode`` (``synthetic`` or ``real``); ConfigError when the deployment cannot run so."""
    if mode == "synthetic":
        return SyntheticExecutor(deployment, speed_factor=speed_factor, seed=seed)
    if mode != "real":
        raise ConfigError(f"--mode must be 'real' or 'synthetic', got {mode!r}")
    if deployment.model is None:
        raise ConfigError(
            "real mode runs a profiled model, but the deployment gives a service_time distribution "
            "(no 'model'): use --mode synthetic"
        )
    from servewise.profiler import VARIANTS

    variant = deployment.model.loaded()
    vdef = VARIANTS.get(variant.name)
    if vdef is None:
        raise ConfigError(
            f"variant {variant.name!r} of {variant.model} is not one servewise can build "
            f"(known: {', '.join(VARIANTS)}); use --mode synthetic"
        )
    if vdef.backend.startswith("onnxruntime"):
        raise ConfigError(f"variant {variant.name}: real mode supports torch variants; use --mode synthetic")
    if vdef.compiles:
        eager = ", ".join(n for n, d in VARIANTS.items() if not d.compiles and not d.backend.startswith("onnxruntime"))
        raise ConfigError(
            f"variant {variant.name}: real mode runs eager torch variants ({eager}); {variant.name} compiles one graph "
            "per input shape, so live traffic would recompile at nearly every request: use --mode synthetic"
        )
    return TorchExecutor(variant, concurrency=concurrency, threads=threads, seed=seed, workdir=workdir)


# --------------------------------------------------------------------------- synthetic


class SyntheticExecutor:
    """Sleeps each batch's service time from :func:`servewise.service.build_service`.

    A batch takes ``batch_time_of(its members' tokens) / speed_factor``: the profiled
    variant's time of the batch padded to its longest member, or the ``service_time``
    distribution's draw (× the batch cost factor), seeded by ``seed``. Generated tokens
    are placeholders ``0 .. output_tokens - 1``. Streamed tokens are spread over the batch
    time: with a profiled decoder as its prefill and decode steps (``variant.step_time``,
    scaled to the batch time), otherwise evenly, token ``k`` of ``o`` at ``k / o`` of it.
    """

    def __init__(self, deployment: Deployment, *, speed_factor: float, seed: int) -> None:
        bat = deployment.batching
        none = np.zeros(0, dtype=np.int64)
        self._service = build_service(
            deployment,
            batch_cost_factor=bat.batch_cost_factor if bat else 0.0,
            rng=np.random.default_rng(seed),
            input_tokens=none,
            output_tokens=none,
        )
        self._variant: Variant | None = deployment.model.loaded() if deployment.model is not None else None
        self.kind: str = self._variant.model_kind if self._variant is not None else "distribution"
        self._cold_start_s = deployment.cold_start_s()
        self._speed = speed_factor

    async def load(self) -> None:
        await asyncio.sleep(self._cold_start_s)

    def prepare(
        self, input_tokens: int | None, output_tokens: int, token_ids: list[int] | None, text: str | None
    ) -> Item:
        if token_ids is not None:
            return Item(len(token_ids), output_tokens)
        if input_tokens is None:
            raise RequestError("input_tokens", "required in synthetic mode when no token_ids are sent (text is not tokenized)")
        return Item(input_tokens, output_tokens)

    def streams(self) -> bool:
        return True

    def limits(self) -> dict[str, Any]:
        return {"kind": None if self.kind == "distribution" else self.kind, "window_tokens": None, "vocab_size": None}

    def _token_offsets_s(self, total_s: float, items: Sequence[Item]) -> np.ndarray:
        """When each of the batch's generated tokens exists, seconds after the batch starts."""
        o = max(it.output_tokens for it in items)
        v = self._variant
        if v is not None and v.model_kind == "decoder":
            b = len(items)
            p = max(max(it.input_tokens for it in items), 1)
            steps = v.step_time(b * p, 0, 0, b)
            if o > 1:
                steps = np.concatenate([steps, v.step_time(0, b, b * (p + np.arange(1, o)))])
            cum = np.cumsum(steps)
            return total_s * cum / cum[-1]
        return total_s * np.arange(1, o + 1) / o

    async def run(self, items: Sequence[Item], emit: Emit | None) -> list[Output]:
        loop = asyncio.get_running_loop()
        start = loop.time()
        total_s = self._service.batch_time_of([it.input_tokens for it in items], [it.output_tokens for it in items])
        total_s /= self._speed
        if emit is not None and any(it.output_tokens for it in items):
            for k, at in enumerate(self._token_offsets_s(total_s, items).tolist()):
                await asyncio.sleep(max(start + at - loop.time(), 0.0))
                for i, it in enumerate(items):
                    if it.output_tokens > k:
                        emit(i, k)
        await asyncio.sleep(max(start + total_s - loop.time(), 0.0))
        return [Output(output_token_ids=list(range(it.output_tokens))) for it in items]

    def close(self) -> None:
        pass


# --------------------------------------------------------------------------- real (torch)


class TorchExecutor:
    """Runs a profiled eager torch variant for real, one batch per slot thread.

    The model is built as the profiler builds it: ``parse_spec``, ``materialize``,
    ``load_model``, ``convert`` (CPU, or CUDA for a CUDA variant; ONNX and compiled
    variants are refused by :func:`build_executor`). A batch is

    - decoder: one prefill of the prompts left-padded to the longest, then greedy decode
      steps (argmax) until every member has its ``output_tokens``; the longest prompt is
      cut from the left so that prompt + output fits ``max_len``. Hugging Face decoders
      get an attention mask; ``builtin:tiny-gpt2`` has none, so a member shorter than
      the batch's longest prompt also attends to its padding;
    - encoder: one forward pass, right-padded with an attention mask; the result is the
      mean-pooled embedding over the member's own tokens;
    - classic: one forward pass of the right-padded ids; the result is the member's row.

    Token ids: the request's own (an id outside the vocabulary is a :class:`RequestError`;
    0 is read as 1), its ``text`` through the model's tokenizer, or ``input_tokens``
    deterministic ids.
    """

    def __init__(self, variant: Variant, *, concurrency: int, threads: int, seed: int, workdir: Path) -> None:
        self.variant = variant
        self.kind: str = variant.model_kind
        self._threads = threads
        self._seed = seed
        self._workdir = workdir
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="replica-slot")
        self._torch: Any = None
        self._loaded: Any = None
        self._module: Any = None
        self._dtype: Any = None
        self._device = "cpu"
        self._pad = 0

    # -- loading

    async def load(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._pool, self._load)

    def _load(self) -> None:
        try:
            import torch
        except ImportError:
            raise MissingExtraError("real mode needs torch (pip install 'servewise[serve]')") from None
        from servewise.errors import ProfileError
        from servewise.profiler import VARIANTS
        from servewise.profiler.models import build_variant

        v = self.variant
        vdef = VARIANTS[v.name]
        if vdef.device == "cuda" and not torch.cuda.is_available():
            raise ConfigError(
                f"variant {v.name} runs on CUDA, which this machine lacks (torch.cuda.is_available() is False); "
                "use --mode synthetic, or a CPU variant"
            )
        torch.set_num_threads(self._threads)
        try:
            torch.set_num_interop_threads(1)  # one replica's ops never spread over another's cores
        except RuntimeError:  # already set, or parallel work already ran in this process
            pass
        torch.manual_seed(self._seed)
        try:
            built = build_variant(v.model, v.name, self._workdir)
        except ProfileError as err:
            raise ConfigError(f"variant {v.label}: {err}") from None
        loaded, module, dtype, device = built.model, built.module, built.dtype, built.device
        if loaded.kind != v.model_kind:
            log.warning("the profile says %s is a %s model; it loads as a %s model", v.model, v.model_kind, loaded.kind)
        self.kind = loaded.kind
        self._torch = torch
        self._loaded = loaded
        self._module = module
        self._dtype = dtype
        self._device = device
        tok = loaded.tokenizer
        pad = getattr(tok, "pad_token_id", None) if tok is not None else None
        if pad is None and tok is not None:
            pad = getattr(tok, "eos_token_id", None)
        self._pad = int(pad) if pad is not None else 0
        n = min(_WARMUP_TOKENS, loaded.max_len - 1)
        warm = self.prepare(n, 2 if self.kind == "decoder" else 0, None, None)
        self._run_batch([warm], None)  # the first inference belongs to the cold start, as in the profile

    # -- requests

    def prepare(
        self, input_tokens: int | None, output_tokens: int, token_ids: list[int] | None, text: str | None
    ) -> Item:
        loaded = self._loaded
        max_len = int(loaded.max_len)
        decoder = self.kind == "decoder"
        if decoder and output_tokens > max_len - 1:
            raise RequestError(
                "output_tokens", f"expected <= {max_len - 1} (the model's max_len {max_len} less one prompt token), got {output_tokens}"
            )
        if token_ids is not None:
            # Ids are clipped into the vocabulary, as before: load generators replay traces
            # whose token ids come from other tokenizers. Only ids no int64 holds (the
            # router refuses ids > 2^31 - 1) or negative ones are the client's mistake.
            bad = next((t for t in token_ids if not 0 <= t < 2**31), None)
            if bad is not None:
                raise RequestError("token_ids", f"expected ids in [0, {2**31 - 1}], got {bad}")
            ids = np.clip(np.asarray(token_ids, dtype=np.int64), 1, max(int(loaded.vocab_size) - 1, 1))
        elif text is not None:
            if loaded.tokenizer is None:
                raise RequestError("text", f"{self.variant.model} has no tokenizer: send token_ids or input_tokens")
            enc = loaded.tokenizer(text, truncation=not decoder, max_length=None if decoder else max_len)
            ids = np.asarray(enc["input_ids"], dtype=np.int64)
            if ids.size == 0:
                raise RequestError("text", "expected text of at least one token")
        else:
            if input_tokens is None:
                raise RequestError("input_tokens", "required when neither token_ids nor text is sent")
            from servewise.profiler.models import fixed_inputs

            ids = fixed_inputs(min(loaded.vocab_size, 30000), 1, min(input_tokens, max_len), seed=_ID_SEED)[0]
        keep = max_len - max(output_tokens, 1) + 1 if decoder else max_len
        ids = ids[-keep:] if decoder else ids[:keep]
        return Item(int(ids.size), output_tokens, tuple(int(t) for t in ids))

    def streams(self) -> bool:
        return self.kind == "decoder"

    def limits(self) -> dict[str, Any]:
        loaded = self._loaded
        if loaded is None:
            return {"kind": self.kind, "window_tokens": None, "vocab_size": None}
        return {"kind": self.kind, "window_tokens": int(loaded.max_len), "vocab_size": int(loaded.vocab_size)}

    async def run(self, items: Sequence[Item], emit: Emit | None) -> list[Output]:
        loop = asyncio.get_running_loop()
        threadsafe: Emit | None = None
        if emit is not None:
            to_loop = emit

            def threadsafe(i: int, tok: int) -> None:
                loop.call_soon_threadsafe(to_loop, i, tok)

        return await loop.run_in_executor(self._pool, self._run_batch, list(items), threadsafe)

    def _run_batch(self, items: list[Item], emit: Emit | None) -> list[Output]:
        with self._torch.inference_mode():
            if self.kind == "decoder":
                return [Output(output_token_ids=t) for t in self._generate(items, emit)]
            return self._forward(items)

    def _padded(self, rows: list[tuple[int, ...]], left: bool) -> tuple[Any, Any]:
        """(ids, attention mask) tensors ``[batch, longest]`` on the variant's device."""
        width = max(len(r) for r in rows)
        ids = np.full((len(rows), width), self._pad, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for i, r in enumerate(rows):
            span = slice(width - len(r), width) if left else slice(0, len(r))
            ids[i, span] = r
            mask[i, span] = 1
        torch = self._torch
        return torch.from_numpy(ids).to(self._device), torch.from_numpy(mask).to(self._device)

    def _forward(self, items: list[Item]) -> list[Output]:
        rows = [it.token_ids or (1,) for it in items]
        ids, mask = self._padded(rows, left=False)
        m = self._module
        if self.kind == "encoder":
            hidden = m(input_ids=ids, attention_mask=mask).last_hidden_state.float().cpu().numpy()
            from servewise.profiler.models import mean_pool

            emb = mean_pool(hidden.astype(np.float64), mask.cpu().numpy())
            return [Output(embedding=[float(x) for x in e]) for e in emb]
        out = m(input_ids=ids, attention_mask=mask) if self._loaded.family == "hf" else m(ids)
        out = out[0] if isinstance(out, (tuple, list)) else out
        flat = out.float().cpu().numpy().reshape(len(items), -1)
        return [Output(output=[float(x) for x in row]) for row in flat]

    def _generate(self, items: list[Item], emit: Emit | None) -> list[list[int]]:
        torch = self._torch
        m = self._module
        outs = [it.output_tokens for it in items]
        longest_out = max(outs)
        keep = int(self._loaded.max_len) - max(longest_out, 1) + 1  # prompt + output within max_len
        ids, mask = self._padded([(it.token_ids or (1,))[-keep:] for it in items], left=True)
        b = ids.shape[0]
        tiny = self._loaded.family == "tiny"
        if tiny:
            cfg = self._loaded.module.cfg
            shape = (cfg.n_layer, b, cfg.n_head, 0, cfg.n_embd // cfg.n_head)
            k = torch.zeros(shape, dtype=self._dtype, device=self._device)
            logits, k, v = m(ids, k, k.clone())
        else:
            pos = (mask.cumsum(-1) - 1).clamp(min=0)
            res = m(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True)
            logits, past = res.logits, res.past_key_values
        tokens: list[list[int]] = [[] for _ in items]
        for step in range(longest_out):
            nxt = logits[:, -1, :].argmax(-1)
            row = nxt.tolist()
            for i, want in enumerate(outs):
                if want > step:
                    tokens[i].append(int(row[i]))
                    if emit is not None:
                        emit(i, int(row[i]))
            if step == longest_out - 1:
                break
            feed = nxt[:, None]
            if tiny:
                logits, k, v = m(feed, k, v)
            else:
                mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
                pos = pos[:, -1:] + 1
                res = m(input_ids=feed, attention_mask=mask, position_ids=pos, past_key_values=past, use_cache=True)
                logits, past = res.logits, res.past_key_values
        return tokens

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

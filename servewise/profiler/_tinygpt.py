"""``builtin:tiny-gpt2``: a small GPT-2-style decoder built from a config, random weights.

Every projection is an ``nn.Linear`` (GPT-2's own ``Conv1D`` is skipped by quantisers),
and the KV cache is explicit tensors in and out, so the same module runs eagerly, under
``torch.compile``, through ``torch.export`` and as an ONNX graph without a cache object.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["TinyGPTConfig", "TinyGPT", "build"]


@dataclass(frozen=True)
class TinyGPTConfig:
    vocab_size: int = 2048
    n_positions: int = 1024
    n_embd: int = 256
    n_layer: int = 4
    n_head: int = 4

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


class _Block(nn.Module):
    def __init__(self, cfg: TinyGPTConfig) -> None:
        super().__init__()
        self.n_head = cfg.n_head
        self.ln_1 = nn.LayerNorm(cfg.n_embd)
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd)
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd)
        self.ln_2 = nn.LayerNorm(cfg.n_embd)
        self.fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd)
        self.fc_out = nn.Linear(4 * cfg.n_embd, cfg.n_embd)

    def forward(
        self, x: torch.Tensor, past_k: torch.Tensor, past_v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, s, d = x.shape
        h = self.n_head
        q, k, v = self.qkv(self.ln_1(x)).split(d, dim=2)
        q = q.view(b, s, h, d // h).transpose(1, 2)
        k = torch.cat([past_k, k.view(b, s, h, d // h).transpose(1, 2)], dim=2)
        v = torch.cat([past_v, v.view(b, s, h, d // h).transpose(1, 2)], dim=2)
        ctx = past_k.shape[2]
        # Causal over the new tokens; every new token sees the whole cache.
        mask = torch.ones(s, ctx + s, dtype=torch.bool, device=x.device).tril(diagonal=ctx)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        x = x + self.proj(a.transpose(1, 2).reshape(b, s, d))
        x = x + self.fc_out(F.gelu(self.fc(self.ln_2(x)), approximate="tanh"))
        return x, k, v


class TinyGPT(nn.Module):
    """Decoder: ``forward(input_ids, past_k, past_v) -> (logits, k, v)``.

    ``past_k``/``past_v`` are ``[n_layer, batch, n_head, context, head_dim]``; a prefill
    passes a context of 0. The returned cache holds ``context + seq`` positions.
    """

    def __init__(self, cfg: TinyGPTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.wpe = nn.Embedding(cfg.n_positions, cfg.n_embd)
        self.blocks = nn.ModuleList(_Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=0.02)

    def empty_cache(
        self, batch: int, dtype: torch.dtype, device: torch.device | str = "cpu"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.cfg
        shape = (c.n_layer, batch, c.n_head, 0, c.n_embd // c.n_head)
        return torch.zeros(shape, dtype=dtype, device=device), torch.zeros(shape, dtype=dtype, device=device)

    def forward(
        self, input_ids: torch.Tensor, past_k: torch.Tensor, past_v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        ctx = past_k.shape[3]
        s = input_ids.shape[1]
        pos = torch.arange(ctx, ctx + s, device=input_ids.device)
        x = self.wte(input_ids) + self.wpe(pos)
        ks, vs = [], []
        for i, block in enumerate(self.blocks):
            x, k, v = block(x, past_k[i], past_v[i])
            ks.append(k)
            vs.append(v)
        return self.lm_head(self.ln_f(x)), torch.stack(ks), torch.stack(vs)


def build(cfg: TinyGPTConfig | None = None, seed: int = 0) -> TinyGPT:
    """The built-in decoder with weights drawn from ``seed`` (reproducible everywhere)."""
    cfg = cfg or TinyGPTConfig()
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = TinyGPT(cfg)
    finally:
        torch.random.set_rng_state(gen_state)
    return model.eval()


def kv_bytes_per_token(cfg: TinyGPTConfig, dtype: torch.dtype) -> int:
    """Bytes of K and V cached per token across all layers."""
    elem = torch.empty((), dtype=dtype).element_size()
    return 2 * cfg.n_layer * cfg.n_embd * elem

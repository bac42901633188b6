"""The variant catalogue: names, what each needs, and why it is skipped when it cannot run."""

from __future__ import annotations

from dataclasses import dataclass

from servewise.errors import ProfileError

__all__ = ["VariantDef", "VARIANTS", "CPU_VARIANTS", "GPU_VARIANTS", "parse_variants", "skip_reason"]


@dataclass(frozen=True)
class VariantDef:
    """A way to run a model: precision, runtime and device."""

    name: str
    dtype: str
    backend: str
    device: str
    needs: tuple[str, ...] = ()
    """Capabilities (see ``profiler._hardware.capabilities``) that must be present."""
    compiles: bool = False
    """Loading compiles every shape (torch.compile, TensorRT): its rounds share one process."""


VARIANTS: dict[str, VariantDef] = {
    v.name: v
    for v in (
        VariantDef("fp32", "float32", "torch-eager", "cpu", ("torch",)),
        VariantDef("bf16", "bfloat16", "torch-eager", "cpu", ("torch",)),
        VariantDef("int8", "int8", "torchao-int8-dynamic+inductor", "cpu", ("torch", "torchao"), compiles=True),
        VariantDef("onnx-fp32", "float32", "onnxruntime", "cpu", ("torch", "onnx", "onnxruntime")),
        VariantDef("onnx-int8", "int8", "onnxruntime-dynamic-quant", "cpu", ("torch", "onnx", "onnxruntime")),
        VariantDef("cuda-fp16", "float16", "torch-eager", "cuda", ("torch", "cuda")),
        VariantDef("cuda-bf16", "bfloat16", "torch-eager", "cuda", ("torch", "cuda")),
        VariantDef(
            "cuda-int8",
            "int8",
            "torchao-int8-weight-only+inductor",
            "cuda",
            ("torch", "cuda", "torchao"),
            compiles=True,
        ),
        VariantDef("tensorrt", "float16", "torch-tensorrt", "cuda", ("torch", "cuda", "torch-tensorrt"), compiles=True),
    )
}
CPU_VARIANTS = tuple(n for n, v in VARIANTS.items() if v.device == "cpu")
GPU_VARIANTS = tuple(n for n, v in VARIANTS.items() if v.device == "cuda")
_GROUPS = {"all": CPU_VARIANTS + GPU_VARIANTS, "cpu": CPU_VARIANTS, "gpu": GPU_VARIANTS}


def parse_variants(text: str) -> list[str]:
    """``fp32,int8`` or a group (``all``, ``cpu``, ``gpu``) -> variant names, in order."""
    names: list[str] = []
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        expanded = _GROUPS.get(item, (item,))
        for name in expanded:
            if name not in VARIANTS:
                raise ProfileError(
                    f"--variants: unknown variant {name!r}; valid: {', '.join(VARIANTS)} (or groups: {', '.join(_GROUPS)})"
                )
            if name not in names:
                names.append(name)
    if not names:
        raise ProfileError("--variants: the list is empty")
    return names


def skip_reason(variant: VariantDef, caps: dict[str, str | None], model_kind: str, spec_kind: str) -> str | None:
    """Why ``variant`` cannot run here for this model, or ``None`` if it can."""
    for need in variant.needs:
        why = caps.get(need, f"{need} is unavailable")
        if why is not None:
            return why
    if variant.backend.startswith("onnxruntime") and spec_kind == "hf" and model_kind == "decoder":
        return (
            "ONNX export of a Hugging Face decoder's KV cache is not supported by servewise; "
            "profile it with fp32/bf16/int8, or use builtin:tiny-gpt2"
        )
    return None

"""Model SPECs, the variant list and why a variant is skipped (no torch)."""

from __future__ import annotations

from pathlib import Path

import pytest

from servewise.errors import ProfileError
from servewise.profiler._spec import parse_spec
from servewise.profiler._variants import VARIANTS, parse_variants, skip_reason

# --------------------------------------------------------------------------- parse_spec


@pytest.mark.parametrize(("spec", "kind"), [("builtin:tiny-gpt2", "tiny-gpt2"), ("builtin:minilm", "minilm")])
def test_builtin_specs(spec: str, kind: str) -> None:
    m = parse_spec(spec)
    assert (m.text, m.kind, m.path) == (spec, kind, None)


def test_spec_text_is_stripped() -> None:
    assert parse_spec("  builtin:minilm\n").text == "builtin:minilm"


def test_hf_folder_with_config(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    m = parse_spec(f"hf:{tmp_path}")
    assert m.kind == "hf" and m.path == tmp_path and m.text == f"hf:{tmp_path}"


def test_hf_folder_without_config_names_config_json(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="config.json") as err:
        parse_spec(f"hf:{tmp_path}")
    assert str(tmp_path) in str(err.value)


def test_hf_path_that_is_not_a_folder(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="not a folder"):
        parse_spec(f"hf:{tmp_path / 'nowhere'}")
    with pytest.raises(ProfileError, match="needs a folder path"):
        parse_spec("hf:")


@pytest.mark.parametrize(
    ("name", "kind"), [("model.pt", "torchscript"), ("model.ts", "torchscript"), ("model.pt2", "export")]
)
def test_model_files(tmp_path: Path, name: str, kind: str) -> None:
    f = tmp_path / name
    f.write_bytes(b"\0")
    m = parse_spec(str(f))
    assert (m.kind, m.path, m.text) == (kind, f, str(f))


@pytest.mark.parametrize("name", ["model.pt", "model.ts", "model.pt2"])
def test_missing_model_file(tmp_path: Path, name: str) -> None:
    f = tmp_path / name
    with pytest.raises(ProfileError, match="no such file") as err:
        parse_spec(str(f))
    assert str(f) in str(err.value)


# Keywords of the four supported forms, written here (not read from SPEC_FORMS).
FORM_KEYWORDS = ("builtin:tiny-gpt2", "builtin:minilm", "hf:PATH", ".pt", ".ts", ".pt2")


@pytest.mark.parametrize("spec", ["gpt5", "builtin:nope", "model.onnx", "", "hf"])
def test_unknown_spec_lists_every_supported_form(spec: str) -> None:
    with pytest.raises(ProfileError) as err:
        parse_spec(spec)
    msg = str(err.value)
    assert repr(spec) in msg
    for kw in FORM_KEYWORDS:
        assert kw in msg, f"{kw!r} missing from: {msg}"
    assert "\n" not in msg


def test_unknown_builtin_names_the_builtins() -> None:
    with pytest.raises(ProfileError, match="'nope'") as err:
        parse_spec("builtin:nope")
    assert "tiny-gpt2" in str(err.value) and "minilm" in str(err.value)


# --------------------------------------------------------------------------- parse_variants

ALL = ["fp32", "bf16", "int8", "onnx-fp32", "onnx-int8", "cuda-fp16", "cuda-bf16", "cuda-int8", "tensorrt"]
CPU = ALL[:5]
GPU = ALL[5:]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("all", ALL),
        ("cpu", CPU),
        ("gpu", GPU),
        ("gpu,cpu", GPU + CPU),
        ("fp32", ["fp32"]),
        ("int8,fp32", ["int8", "fp32"]),
        (" int8 , fp32 ,int8", ["int8", "fp32"]),
        ("tensorrt,all", ["tensorrt"] + ALL[:-1]),
        ("cpu,fp32,cpu", CPU),
        ("fp32,,bf16,", ["fp32", "bf16"]),
    ],
)
def test_parse_variants(text: str, expected: list[str]) -> None:
    assert parse_variants(text) == expected


def test_unknown_variant_lists_the_valid_names() -> None:
    with pytest.raises(ProfileError, match="'fp64'") as err:
        parse_variants("fp32,fp64")
    msg = str(err.value)
    for name in ALL + ["all", "cpu", "gpu"]:
        assert name in msg


@pytest.mark.parametrize("text", ["", " ", ",", " , ,"])
def test_empty_variant_list_is_an_error(text: str) -> None:
    with pytest.raises(ProfileError, match="empty"):
        parse_variants(text)


# --------------------------------------------------------------------------- skip_reason

EVERYTHING = {"torch": None, "cuda": None, "onnx": None, "onnxruntime": None, "torchao": None, "torch-tensorrt": None}


def test_nothing_missing_means_no_skip() -> None:
    for v in VARIANTS.values():
        assert skip_reason(v, EVERYTHING, "encoder", "minilm") is None, v.name


def test_missing_capability_returns_its_reason() -> None:
    caps = dict(EVERYTHING, torchao="torchao is not importable (ImportError: nope); pip install it")
    assert skip_reason(VARIANTS["int8"], caps, "classic", "torchscript") == caps["torchao"]
    assert skip_reason(VARIANTS["fp32"], caps, "classic", "torchscript") is None


def test_capability_absent_from_caps_is_unavailable() -> None:
    caps = {k: v for k, v in EVERYTHING.items() if k != "onnxruntime"}
    why = skip_reason(VARIANTS["onnx-fp32"], caps, "encoder", "minilm")
    assert why is not None and "onnxruntime" in why


def test_cuda_variants_are_skipped_without_cuda() -> None:
    no_cuda = "CUDA is not available on this machine (no NVIDIA GPU or driver)"
    caps = dict(EVERYTHING, cuda=no_cuda)
    for name in GPU:
        assert skip_reason(VARIANTS[name], caps, "decoder", "tiny-gpt2") == no_cuda, name
    for name in CPU:
        assert skip_reason(VARIANTS[name], caps, "decoder", "tiny-gpt2") is None, name


@pytest.mark.parametrize("name", ["onnx-fp32", "onnx-int8"])
def test_onnx_of_an_hf_decoder_is_skipped_with_a_reason(name: str) -> None:
    why = skip_reason(VARIANTS[name], EVERYTHING, "decoder", "hf")
    assert why is not None and "ONNX" in why and "decoder" in why
    # The built-in decoder and HF encoders export fine.
    assert skip_reason(VARIANTS[name], EVERYTHING, "decoder", "tiny-gpt2") is None
    assert skip_reason(VARIANTS[name], EVERYTHING, "encoder", "hf") is None
    # Torch variants of the same HF decoder run.
    assert skip_reason(VARIANTS["fp32"], EVERYTHING, "decoder", "hf") is None

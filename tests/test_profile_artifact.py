"""The `Profile` artifact: reading errors, variant lookup, validators and latency queries.

Expected times are worked out here from the linear coefficients by hand (plain
arithmetic), not through the module's feature helpers.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from servewise.errors import ArtifactError, ConfigError
from servewise.profile import (
    Hardware,
    LatencyStats,
    Point,
    Profile,
    Variant,
    load_profile,
    save_profile,
)

# batch_time(b, s) = A + c_b·b + c_t·b·s + c_q·b·s²
CA, CB, CT, CQ = 0.004, 0.003, 2e-5, 1e-8
# step_time = A + c_p·prefill + c_q·prefill²/seqs + c_d·decode_seqs + c_c·context
DA, DP, DQ, DD, DC = 0.002, 1e-5, 2e-8, 0.0015, 3e-7


def _classic(make_variant, name: str = "fp32", **kw) -> Variant:
    return make_variant(name, kind="classic", linear=(CA, [CB, CT, CQ]), **kw)


def _decoder(make_variant, name: str = "fp32", **kw) -> Variant:
    return make_variant(name, kind="decoder", linear=(DA, [DP, DQ, DD, DC, 0.0]), **kw)


def _profile(*variants: Variant) -> Profile:
    return Profile(
        status="complete",
        created_utc="2025-01-01T00:00:00Z",
        tool_version="test",
        hardware=Hardware(cpu_model="test cpu", cpu_count=2, threads_used=2, mem_bytes=2**30),
        variants=list(variants),
    )


def _stats(t: float) -> LatencyStats:
    return LatencyStats(mean=t, p50=t, p90=t, p99=t, min=t, max=t, iqr=0.0, cv=0.0, n=1, ci_rel=0.0)


# --------------------------------------------------------------------------- load_profile errors


def _one_line_naming(err: pytest.ExceptionInfo[ArtifactError], path: Path) -> str:
    msg = str(err.value)
    assert "\n" not in msg, msg
    assert str(path) in msg, msg
    return msg


def test_missing_file(tmp_path: Path) -> None:
    p = tmp_path / "nope.json"
    with pytest.raises(ArtifactError) as err:
        load_profile(p)
    assert "no such" in _one_line_naming(err, p)


def test_invalid_json_names_the_line(tmp_path: Path) -> None:
    p = tmp_path / "bad.json"
    p.write_text('{\n  "kind": "profile",\n  oops\n}\n')
    with pytest.raises(ArtifactError) as err:
        load_profile(p)
    msg = _one_line_naming(err, p)
    assert f"{p}:3:" in msg and "JSON" in msg


def test_not_an_object(tmp_path: Path) -> None:
    p = tmp_path / "list.json"
    p.write_text("[1, 2]")
    with pytest.raises(ArtifactError) as err:
        load_profile(p)
    assert "list" in _one_line_naming(err, p)


def _saved_doc(tmp_path: Path, make_variant) -> tuple[Path, dict]:
    v = _classic(make_variant)
    v = v.model_copy(
        update={
            "points": [
                Point(
                    phase="forward",
                    batch_size=2,
                    seq_len=8,
                    status="measured",
                    latency_s=_stats(0.01),
                    samples_s=[0.01],
                )
            ]
        }
    )
    p = tmp_path / "profile.json"
    save_profile(_profile(v), p)
    return p, json.loads(p.read_text())


@pytest.mark.parametrize("kind", ["result", None, "Profile"])
def test_kind_is_not_profile(tmp_path: Path, make_variant, kind) -> None:
    p, doc = _saved_doc(tmp_path, make_variant)
    if kind is None:
        del doc["kind"]
    else:
        doc["kind"] = kind
    p.write_text(json.dumps(doc))
    with pytest.raises(ArtifactError) as err:
        load_profile(p)
    msg = _one_line_naming(err, p)
    assert "kind" in msg and repr(kind) in msg and "'profile'" in msg


@pytest.mark.parametrize("version", [0, 2, "1", None])
def test_unsupported_schema_version(tmp_path: Path, make_variant, version) -> None:
    p, doc = _saved_doc(tmp_path, make_variant)
    doc["schema_version"] = version
    p.write_text(json.dumps(doc))
    with pytest.raises(ArtifactError) as err:
        load_profile(p)
    msg = _one_line_naming(err, p)
    assert "schema_version" in msg and repr(version) in msg


@pytest.mark.parametrize(
    ("path", "value", "dotted"),
    [
        (("hardware", "cpu_count"), "many", "hardware.cpu_count"),
        (("variants", 0, "points", 0, "batch_size"), "two", "variants.0.points.0.batch_size"),
        (("variants", 0, "latency_model", "coef_s"), "fast", "variants.0.latency_model.coef_s"),
        (("variants", 0, "device"), "tpu", "variants.0.device"),
        (("status",), 3, "status"),
    ],
)
def test_wrong_field_type_names_its_dotted_path(tmp_path: Path, make_variant, path, value, dotted) -> None:
    p, doc = _saved_doc(tmp_path, make_variant)
    node = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    p.write_text(json.dumps(doc))
    with pytest.raises(ArtifactError) as err:
        load_profile(p)
    msg = _one_line_naming(err, p)
    assert f"'{dotted}'" in msg, msg


def test_save_then_load_is_identity(tmp_path: Path, make_variant) -> None:
    profile = _profile(_classic(make_variant), _decoder(make_variant, "bf16", model="builtin:tiny-gpt2"))
    p = tmp_path / "sub" / "p.json"
    p.parent.mkdir()
    save_profile(profile, p)
    assert load_profile(p) == profile
    assert load_profile(str(p)) == profile


# --------------------------------------------------------------------------- Profile.variant


def test_single_model_resolves_by_name(make_variant) -> None:
    prof = _profile(_classic(make_variant, "fp32"), _classic(make_variant, "int8"))
    assert prof.variant("int8").name == "int8"
    assert prof.variant("fp32", model="builtin:test-model").name == "fp32"


def test_several_models_need_model(make_variant) -> None:
    a = _classic(make_variant, "fp32", model="builtin:minilm")
    b = _decoder(make_variant, "fp32", model="builtin:tiny-gpt2")
    prof = _profile(a, b)
    with pytest.raises(ConfigError) as err:
        prof.variant("fp32")
    assert "builtin:minilm" in str(err.value) and "builtin:tiny-gpt2" in str(err.value)
    assert prof.variant("fp32", model="builtin:tiny-gpt2") is prof.variants[1]
    assert prof.variant("fp32", model="builtin:minilm") is prof.variants[0]
    with pytest.raises(ConfigError) as err:
        prof.variant("fp32", model="builtin:gpt5")
    assert (
        "builtin:gpt5" in str(err.value)
        and "builtin:minilm" in str(err.value)
        and "builtin:tiny-gpt2" in str(err.value)
    )


def test_unknown_variant_lists_the_variants(make_variant) -> None:
    prof = _profile(_classic(make_variant, "fp32"), _classic(make_variant, "onnx-int8"))
    with pytest.raises(ConfigError) as err:
        prof.variant("bf16")
    msg = str(err.value)
    assert "'bf16'" in msg and "fp32" in msg and "onnx-int8" in msg


def test_empty_profile_has_no_variant() -> None:
    with pytest.raises(ConfigError, match="none"):
        _profile().variant("fp32")


# --------------------------------------------------------------------------- validators


def _variant_doc(**kw) -> dict:
    doc = {
        "model": "builtin:minilm",
        "model_kind": "encoder",
        "name": "fp32",
        "dtype": "float32",
        "backend": "torch-eager",
        "device": "cpu",
    }
    doc.update(kw)
    return doc


def test_variant_validators() -> None:
    with pytest.raises(ValidationError, match="skip_reason"):
        Variant.model_validate(_variant_doc(status="skipped"))
    with pytest.raises(ValidationError, match="error"):
        Variant.model_validate(_variant_doc(status="failed"))
    assert Variant.model_validate(_variant_doc(status="skipped", skip_reason="no CUDA")).skip_reason == "no CUDA"
    assert Variant.model_validate(_variant_doc(status="failed", error="OOM")).error == "OOM"
    with pytest.raises(ValidationError, match="extra"):
        Variant.model_validate(_variant_doc(status="measured", colour="red"))


def test_point_validators() -> None:
    with pytest.raises(ValidationError, match="samples_s"):
        Point(phase="forward", batch_size=1, seq_len=1, status="measured", latency_s=_stats(0.01))
    with pytest.raises(ValidationError, match="latency_s"):
        Point(phase="forward", batch_size=1, seq_len=1, status="measured", samples_s=[0.01])
    with pytest.raises(ValidationError, match="error"):
        Point(phase="forward", batch_size=1, seq_len=1, status="failed")
    with pytest.raises(ValidationError):
        Point(phase="forward", batch_size=0, seq_len=1, status="failed", error="x")


# --------------------------------------------------------------------------- latency queries


def _hand_step(prefill: float, prefill_seqs: float, decode: float, context: float) -> float:
    return DA + DP * prefill + DQ * prefill * prefill / prefill_seqs + DD * decode + DC * context


@pytest.mark.parametrize(("b", "prompt", "out"), [(1, 10, 1), (4, 100, 5), (8, 512, 64), (3, 7, 2)])
def test_generation_time_is_prefill_plus_decode_steps(make_variant, b: int, prompt: int, out: int) -> None:
    v = _decoder(make_variant)
    # Prefill: b prompts of `prompt` tokens in one iteration.
    expected = _hand_step(b * prompt, b, 0, 0)
    # Then out-1 decode steps; at step j each of the b sequences holds prompt+j tokens.
    for j in range(1, out):
        expected += _hand_step(0, 1, b, b * (prompt + j))
    assert v.generation_time(b, prompt, out) == pytest.approx(expected, rel=1e-12)


def test_generation_time_closed_form(make_variant) -> None:
    # b=2, prompt=10, out=4: prefill 20 tokens (20²/2 = 200), then 3 decodes over 22, 24, 26 cached tokens.
    expected = (0.002 + 1e-5 * 20 + 2e-8 * 200) + 3 * (0.002 + 0.0015 * 2) + 3e-7 * (22 + 24 + 26)
    assert _decoder(make_variant).generation_time(2, 10, 4) == pytest.approx(expected, rel=1e-12)


def test_step_time_broadcasts(make_variant) -> None:
    v = _decoder(make_variant)
    got = v.step_time([0, 64, 128], 4, [400, 0, 800], prefill_seqs=[1, 2, 4])
    expected = [_hand_step(0, 1, 4, 400), _hand_step(64, 2, 4, 0), _hand_step(128, 4, 4, 800)]
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_batch_time_broadcasts(make_variant) -> None:
    v = _classic(make_variant)

    def hand(b: float, s: float) -> float:
        return CA + CB * b + CT * b * s + CQ * b * s * s

    got = v.batch_time(np.array([1, 2, 4, 8]), 128)
    assert got.shape == (4,)
    np.testing.assert_allclose(got, [hand(b, 128) for b in (1, 2, 4, 8)], rtol=1e-12)
    got = v.batch_time(16, np.array([32, 64]))
    np.testing.assert_allclose(got, [hand(16, 32), hand(16, 64)], rtol=1e-12)
    got = v.batch_time(np.array([1, 2, 3]), np.array([10, 20, 30]))
    np.testing.assert_allclose(got, [hand(1, 10), hand(2, 20), hand(3, 30)], rtol=1e-12)
    assert v.batch_time(2, 50).shape == (1,)


def test_service_time_encoder_is_one_forward_pass(make_variant) -> None:
    v = _classic(make_variant, model_kind="encoder")
    b, s = 4, 200
    expected = CA + CB * b + CT * b * s + CQ * b * s * s
    assert v.service_time(b, s, 50) == pytest.approx(expected, rel=1e-12)
    assert v.service_time(b, s, 1) == pytest.approx(expected, rel=1e-12)  # output tokens do not matter
    # An empty input still costs a one-token pass.
    assert v.service_time(1, 0, 0) == pytest.approx(CA + CB + CT + CQ, rel=1e-12)


def test_service_time_decoder_is_the_generation(make_variant) -> None:
    v = _decoder(make_variant)
    b, prompt, out = 3, 40, 3
    expected = _hand_step(b * prompt, b, 0, 0) + _hand_step(0, 1, b, b * 41) + _hand_step(0, 1, b, b * 42)
    assert v.service_time(b, prompt, out) == pytest.approx(expected, rel=1e-12)
    # At least one prompt token and one output token (the prefill alone).
    assert v.service_time(2, 0, 0) == pytest.approx(_hand_step(2, 2, 0, 0), rel=1e-12)


def test_batch_time_of_a_decoder_names_step_time(make_variant) -> None:
    with pytest.raises(ConfigError, match="step_time"):
        _decoder(make_variant).batch_time(1, 8)
    with pytest.raises(ConfigError, match="batch_time"):
        _classic(make_variant).step_time(8, 0, 0)
    with pytest.raises(ConfigError, match="batch_time"):
        _classic(make_variant).generation_time(1, 8, 2)


def test_variant_without_a_model_says_so(make_variant) -> None:
    v = Variant.model_validate(_variant_doc(status="failed", error="OOM"))
    with pytest.raises(ConfigError, match="no fitted latency model"):
        v.batch_time(1, 8)
    assert v.noise_cv == 0.0
    assert _classic(make_variant, noise_cv=0.07).noise_cv == 0.07

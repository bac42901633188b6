"""A deployment that names a profiled ``model``: the simulator's service times come from
the variant's latency model and its cold start from the variant's load time.

Profiles are built by hand (``make_variant`` / ``write_profile`` in ``tests/conftest.py``)
with linear latency models whose coefficients each test states; every expected number
is computed here from those coefficients or from queueing theory, never taken from an
earlier run of the simulator.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from servewise import service as _service
from servewise.config import Deployment, ModelRef, load_deployment, parse_deployment
from servewise.errors import ConfigError
from servewise.profile import LatencyModel, Tree, Variant
from servewise.simulator import SimResult, simulate
from servewise.trace import TokenSpec, Trace, poisson

# classic: batch_time(b, s) = A + B·b + T·b·s + Q·b·s²
A, B, T, Q = 0.01, 0.02, 5e-4, 2e-6
CLASSIC = (A, [B, T, Q])
# decoder: step_time = A0 + P1·prefill + P2·prefill²/seqs + D·decode_seqs + C·context
A0, P1, P2, D, C = 0.003, 1e-5, 1e-8, 0.002, 1e-6
DECODER = (A0, [P1, P2, D, C, 0.0])


def classic_time(b: int, s: int) -> float:
    return A + B * b + T * b * s + Q * b * s * s


def decoder_time(b: int, p: int, o: int) -> float:
    """Static generation of ``b`` sequences: prefill of b·p tokens, then o - 1 decode steps
    of b sequences over a context of b·(p + k) tokens, k = 1 .. o - 1."""
    prefill = A0 + P1 * b * p + P2 * (b * p) ** 2 / b
    steps = o - 1
    decode = steps * (A0 + D * b + C * b * p) + C * b * steps * (steps + 1) / 2
    return prefill + decode


def write_deployment(tmp_path: Path, **fields: Any) -> Path:
    doc: dict[str, Any] = {"replicas": 1, "model": {"profile": "profile.json", "variant": "fp32"}}
    doc.update(fields)
    p = tmp_path / "deployment.yaml"
    p.write_text(yaml.safe_dump(doc))
    return p


def trace_of(arrival_s, input_tokens, output_tokens=None) -> Trace:
    n = len(arrival_s)
    return Trace(
        arrival_s=np.asarray(arrival_s, dtype=float),
        input_tokens=np.asarray(input_tokens, dtype=np.int64) * np.ones(n, dtype=np.int64),
        output_tokens=np.ones(n, dtype=np.int64) if output_tokens is None else np.asarray(output_tokens),
        source="test",
    )


def col(res: SimResult, name: str) -> np.ndarray:
    return res.requests[name].to_numpy()


@pytest.fixture
def classic_dep(tmp_path, make_variant, write_profile):
    """Load a deployment of the classic profile (noise_cv 0 unless given) with extra fields."""

    def load(noise_cv: float = 0.0, **fields: Any) -> Deployment:
        write_profile(make_variant("fp32", linear=CLASSIC, noise_cv=noise_cv))
        return load_deployment(write_deployment(tmp_path, **fields))

    return load


# --------------------------------------------------------------------------- per request and per batch


def test_classic_request_time_is_one_forward_pass_of_its_input(classic_dep):
    dep = classic_dep()
    tokens = [1, 7, 100, 640, 0]  # 0 counts as the shortest sequence, 1 token
    res = simulate(dep, trace_of(np.arange(5) * 100.0, tokens), seed=0)
    expected = [classic_time(1, max(s, 1)) for s in tokens]
    assert col(res, "latency_s").tolist() == pytest.approx(expected, rel=1e-12)


def test_classic_batch_is_padded_to_its_longest_member(classic_dep):
    """r0 runs alone on [0, S(1, 50)]; r1..r3 queue meanwhile and then run as one batch of 3
    padded to 400 tokens."""
    dep = classic_dep(batching={"max_batch_size": 3, "max_wait_s": 0.0})
    res = simulate(dep, trace_of([0.0, 0.001, 0.001, 0.001], [50, 10, 400, 20]), seed=0)
    first = classic_time(1, 50)
    assert col(res, "batch_size").tolist() == [1, 3, 3, 3]
    assert col(res, "end_s").tolist() == pytest.approx([first] + [first + classic_time(3, 400)] * 3, rel=1e-12)


def test_decoder_request_time_is_prefill_plus_every_decode_step(tmp_path, make_variant, write_profile):
    write_profile(make_variant("fp32", kind="decoder", linear=DECODER))
    dep = load_deployment(write_deployment(tmp_path))
    rng = np.random.default_rng(3)
    n = 60
    p = rng.integers(0, 2000, n)
    o = rng.integers(0, 300, n)
    p[:3], o[:3] = [0, 5, 5], [0, 1, 2]  # zero counts as one token; one output token is the prefill's
    res = simulate(dep, trace_of(np.arange(n) * 100.0, p, o), seed=0)
    expected = [decoder_time(1, max(a, 1), max(b, 1)) for a, b in zip(p.tolist(), o.tolist(), strict=True)]
    assert col(res, "latency_s").tolist() == pytest.approx(expected, rel=1e-12)
    assert expected[1] == pytest.approx(A0 + P1 * 5 + P2 * 25, rel=1e-12)


def test_decoder_batch_is_padded_to_the_longest_prompt_and_output(tmp_path, make_variant, write_profile):
    write_profile(make_variant("fp32", kind="decoder", linear=DECODER))
    dep = load_deployment(write_deployment(tmp_path, batching={"max_batch_size": 3, "max_wait_s": 0.0}))
    res = simulate(dep, trace_of([0.0, 0.001, 0.001, 0.001], [50, 300, 20, 80], [10, 5, 40, 7]), seed=0)
    first = decoder_time(1, 50, 10)
    assert col(res, "end_s").tolist() == pytest.approx([first] + [first + decoder_time(3, 300, 40)] * 3, rel=1e-12)


def test_decoder_prompts_are_clipped_to_the_window_as_the_server_clips_them(tmp_path, make_variant, write_profile):
    """Window 200: alone, a prompt is cut to 200 − output + 1; in a batch the longest prompt
    to 200 − the batch's longest output + 1 (``TorchExecutor._generate``); an output over
    199 is rejected for ``window``, as the router answers it 422."""
    write_profile(make_variant("fp32", kind="decoder", linear=DECODER, window_tokens=200))
    dep = load_deployment(write_deployment(tmp_path, batching={"max_batch_size": 3, "max_wait_s": 0.0}))
    res = simulate(dep, trace_of([0.0, 0.001, 0.001, 0.001, 9.0], [500, 300, 20, 80, 3], [10, 5, 60, 7, 200]), seed=0)
    first = decoder_time(1, 191, 10)
    assert col(res, "end_s").tolist()[:4] == pytest.approx([first] + [first + decoder_time(3, 141, 60)] * 3, rel=1e-12)
    assert col(res, "served_input_tokens").tolist() == [191, 196, 20, 80, 1]
    assert res.requests["status"].tolist()[4] == "rejected" and res.requests["reason"].tolist()[4] == "window"
    assert res.rejections == {"window": 1}


def test_encoder_input_is_cut_to_the_window(tmp_path, make_variant, write_profile):
    write_profile(make_variant("fp32", kind="classic", linear=CLASSIC, window_tokens=128))
    dep = load_deployment(write_deployment(tmp_path))
    res = simulate(dep, trace_of(np.arange(3) * 100.0, [50, 128, 4000]), seed=0)
    assert col(res, "latency_s").tolist() == pytest.approx([classic_time(1, s) for s in (50, 128, 128)], rel=1e-12)


def _stump(feature: int, threshold: float, low: float, high: float) -> Tree:
    return Tree(left=[1, -1, -1], right=[2, -1, -1], feature=[feature, -2, -2], threshold=[threshold, -2, -2], value=[0.0, low, high])


@pytest.mark.parametrize("chunk_rows", [1 << 20, 7])
@pytest.mark.parametrize("kind", ["linear", "tree_ensemble"])
def test_vectorised_generation_times_equal_the_profile_one_by_one(monkeypatch, make_variant, kind, chunk_rows):
    """The simulator's vectorised helper agrees with ``Variant.generation_time`` for every
    pair, duplicates included, whatever the chunk size."""
    monkeypatch.setattr(_service, "_CHUNK_ROWS", chunk_rows)
    v: Variant = make_variant("fp32", kind="decoder", linear=DECODER)
    if kind == "tree_ensemble":
        lm = LatencyModel(
            target="step_time",
            kind="tree_ensemble",
            features=list(v.latency_model.features),  # type: ignore[union-attr]
            cv_mape=0.05,
            cv_folds=5,
            candidates={"tree_ensemble": 0.05},
            n_points=12,
            init=math.log(0.002),
            learning_rate=0.5,
            trees=[_stump(3, 300.0, 0.0, 0.7), _stump(0, 100.0, 0.1, 1.5)],
        )
        v = v.model_copy(update={"latency_model": lm})
    rng = np.random.default_rng(7)
    p = rng.integers(1, 600, 200)
    o = rng.integers(1, 40, 200)
    p[100:], o[100:] = p[:100], o[:100]
    got = _service.generation_times(v, p, o)
    expected = [v.generation_time(1, a, b) for a, b in zip(p.tolist(), o.tolist(), strict=True)]
    assert got.tolist() == pytest.approx(expected, rel=1e-12)


# --------------------------------------------------------------------------- against theory


def test_deterministic_profile_service_is_md1_pollaczek_khinchine(classic_dep):
    """noise_cv 0 and one input length: every request takes S = batch_time(1, 100) = 0.1 s,
    an M/D/1 queue. Pollaczek–Khinchine: Wq = λ·S² / (2·(1 − ρ)), ρ = λ·S (Kleinrock,
    *Queueing Systems* Vol. 1, 1975, Sec. 5.6). 8 replications of 20 000 requests, the
    first 100 s deleted; mean within max(4 SE, 1 %) of theory."""
    dep = classic_dep()
    s = classic_time(1, 100)
    assert s == pytest.approx(0.1, rel=1e-12)
    lam = 7.0
    theory = lam * s * s / (2 * (1 - lam * s))
    waits = []
    for k in range(8):
        trace = poisson(rate_rps=lam, n_requests=20_000, seed=100 + k, tokens=TokenSpec(input_mean=100, output_mean=1))
        res = simulate(dep, trace, seed=200 + k, warmup_s=100.0)
        served = col(res, "end_s") - col(res, "start_s")
        assert served.tolist() == pytest.approx([s] * len(served), rel=1e-12)
        waits.append(res.summary.queue_s.mean)
    w = np.asarray(waits)
    se = w.std(ddof=1) / math.sqrt(len(w))
    print(f"[theory] M/D/1 from a profile: theory={theory:.5g} sim={w.mean():.5g} se={se:.2g}")
    assert 4 * se <= 0.1 * theory
    assert abs(w.mean() - theory) <= max(4 * se, 0.01 * theory)


def test_noise_is_lognormal_with_median_one_and_the_variants_cv(classic_dep):
    """noise_cv 0.3: service / batch_time is log-normal with median 1 and CV 0.3, i.e.
    log-sd sqrt(ln(1 + 0.3²)); the same for batches. 20 000 requests, far apart."""
    dep = classic_dep(noise_cv=0.3)
    n = 20_000
    res = simulate(dep, trace_of(np.arange(n) * 10.0, 100), seed=5)
    ratio = col(res, "latency_s") / classic_time(1, 100)
    sigma = math.sqrt(math.log1p(0.3**2))
    assert np.median(ratio) == pytest.approx(1.0, abs=0.015)  # SE of the median ≈ 0.0026
    assert np.log(ratio).std() == pytest.approx(sigma, rel=0.03)
    assert ratio.std() / ratio.mean() == pytest.approx(0.3, rel=0.05)

    batched = classic_dep(noise_cv=0.3, batching={"max_batch_size": 2, "max_wait_s": 1.0})
    m = 4000
    res = simulate(batched, trace_of(np.repeat(np.arange(m) * 10.0, 2), np.tile([100, 30], m)), seed=6)
    assert (col(res, "batch_size") == 2).all()
    ratio = (col(res, "end_s") - col(res, "start_s"))[::2] / classic_time(2, 100)
    assert np.median(ratio) == pytest.approx(1.0, abs=0.03)
    assert np.log(ratio).std() == pytest.approx(sigma, rel=0.06)


def test_noise_free_profile_is_deterministic_across_seeds(classic_dep):
    dep = classic_dep()
    trace = trace_of(np.arange(50) * 0.05, np.arange(50) + 1)
    a, b = simulate(dep, trace, seed=1), simulate(dep, trace, seed=2)
    assert col(a, "end_s").tolist() == col(b, "end_s").tolist()


# --------------------------------------------------------------------------- cold start


@pytest.mark.parametrize(("cold", "expected"), [(None, 2.5), (0.5, 0.5), (0.0, 0.0)])
def test_serverless_cold_start_is_the_variants_load_time_unless_set(classic_dep, cold, expected):
    """load_time_s = 2.5. Both requests find no warm instance (the second arrives after the
    first instance's keep-alive), so each waits the cold start, then runs 0.1 s."""
    scaling: dict[str, Any] = {"mode": "serverless", "max_replicas": 2, "keep_alive_s": 10.0}
    if cold is not None:
        scaling["cold_start_s"] = cold
    dep = classic_dep(replicas=0, scaling=scaling)
    assert dep.cold_start_s() == expected
    res = simulate(dep, trace_of([0.0, 100.0], 100), seed=0)
    assert col(res, "cold_start_s").tolist() == pytest.approx([expected, expected], abs=1e-12)
    assert col(res, "latency_s").tolist() == pytest.approx([expected + 0.1] * 2, rel=1e-12)


@pytest.mark.parametrize(("cold", "ready_at"), [(None, 3.5), (0.5, 1.5)])
def test_autoscaled_replica_serves_after_the_variants_load_time(classic_dep, cold, ready_at):
    """Arrivals every 0.05 s at 0.1 s each overload one replica; the autoscaler's first
    tick (t = 1) adds a replica, which takes its first request at 1 + load_time_s (2.5)
    — or 1 + scaling.cold_start_s when that is set."""
    scaling: dict[str, Any] = {
        "mode": "autoscale",
        "min_replicas": 1,
        "max_replicas": 2,
        "target_in_flight": 1,
        "interval_s": 1.0,
    }
    if cold is not None:
        scaling["cold_start_s"] = cold
    dep = classic_dep(scaling=scaling, balancer={"policy": "least_outstanding"})
    arrival = np.arange(200) / 20
    res = simulate(dep, trace_of(arrival, 100), seed=0)
    on_new = col(res, "replica") == 1
    assert on_new.any()
    first_start = col(res, "start_s")[on_new].min()
    assert first_start == pytest.approx(arrival[arrival >= ready_at][0], abs=1e-12)
    assert res.summary.cold_starts == 1


# --------------------------------------------------------------------------- library use and errors


def test_a_library_user_can_pass_an_already_loaded_variant(make_variant):
    variant = make_variant("fp32", linear=CLASSIC)
    dep = Deployment(replicas=1, model=ModelRef(profile="not-read.json", variant="fp32", resolved=variant))
    res = simulate(dep, trace_of([0.0, 10.0], [100, 200]), seed=0)
    assert col(res, "latency_s").tolist() == pytest.approx([classic_time(1, 100), classic_time(1, 200)], rel=1e-12)


def test_an_unloaded_profile_is_a_clear_error_at_simulate_time():
    dep = parse_deployment({"replicas": 1, "model": {"profile": "p.json", "variant": "fp32"}})
    with pytest.raises(ConfigError, match=r"model.profile 'p.json' is not loaded: use load_deployment"):
        simulate(dep, trace_of([0.0], 10), seed=0)


def test_a_trace_without_input_tokens_is_refused(classic_dep):
    dep = classic_dep()
    with pytest.raises(ConfigError, match=r"the trace has no input_tokens \(0 for every request\)") as err:
        simulate(dep, trace_of([0.0, 1.0], 0), seed=0)
    assert "service_time distribution instead" in str(err.value)


def test_a_decoder_needs_output_tokens_a_classic_model_does_not(tmp_path, make_variant, write_profile, classic_dep):
    res = simulate(classic_dep(), trace_of([0.0], 10, [0]), seed=0)
    assert col(res, "latency_s")[0] == pytest.approx(classic_time(1, 10), rel=1e-12)
    write_profile(make_variant("fp32", kind="decoder"))
    dep = load_deployment(write_deployment(tmp_path))
    with pytest.raises(ConfigError, match=r"no output_tokens .* builtin:test-model/fp32 \(a decoder model\)"):
        simulate(dep, trace_of([0.0], 10, [0]), seed=0)


def test_result_records_which_profiled_variant_ran(tmp_path: Path, make_variant, write_profile) -> None:
    """The deployment YAML holds only the profile's path: the result names the variant and hashes it."""
    from servewise.config import load_deployment
    from servewise.simulator import simulate

    write_profile(make_variant("fp32", load_time_s=1.0))
    dep = load_deployment(write_deployment(tmp_path))
    res = simulate(dep, trace_of([0.0, 1.0], [16, 16]), seed=0)
    meta = res.metadata
    assert meta.model_variant == "builtin:test-model/fp32"
    assert len(meta.model_variant_sha256) == 64 and meta.model_estimated is False
    # A different profile at the same path gives a different hash.
    write_profile(make_variant("fp32", load_time_s=2.0))
    meta2 = simulate(load_deployment(write_deployment(tmp_path)), trace_of([0.0, 1.0], [16, 16]), seed=0).metadata
    assert meta2.deployment_sha256 == meta.deployment_sha256
    assert meta2.model_variant_sha256 != meta.model_variant_sha256

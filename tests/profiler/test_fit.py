"""`fit_latency_model`: the linear and tree candidates, chosen by cross-validated MAPE.

Points are generated here from known laws (no torch): the linear candidate must recover
the law's own coefficients, a step law must go to the trees, and the numpy evaluation of
the stored trees must equal scikit-learn's own prediction of the same fitted ensemble.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

if os.environ.get("CI"):
    import sklearn  # noqa: F401 - CI installs the profile extra; a missing sklearn must fail loudly
else:
    pytest.importorskip("sklearn", reason="the profile extra is not installed (pip install -e '.[profile]')")

from sklearn.ensemble import GradientBoostingRegressor  # noqa: E402

from servewise.profile import (  # noqa: E402
    BATCH_FEATURES,
    STEP_FEATURES,
    Hardware,
    LatencyModel,
    LatencyStats,
    Point,
    Profile,
    Variant,
    load_profile,
    save_profile,
)
from servewise.profiler._fit import MIN_POINTS, _trees, fit_latency_model  # noqa: E402

# --------------------------------------------------------------------------- helpers


def _point(phase: str, b: int, s: int, t: float, cv: float = 0.01, iqr_rel: float = 0.01) -> Point:
    """A measured point whose median is ``t`` seconds (the statistics are set, not derived)."""
    stats = LatencyStats(
        mean=t, p50=t, p90=t * 1.01, p99=t * 1.02, min=t * 0.99, max=t * 1.03, iqr=t * iqr_rel, cv=cv, n=3, ci_rel=0.01
    )
    return Point(phase=phase, batch_size=b, seq_len=s, status="measured", latency_s=stats, samples_s=[t, t, t])  # type: ignore[arg-type]


def _failed(phase: str, b: int, s: int) -> Point:
    return Point(phase=phase, batch_size=b, seq_len=s, status="failed", error="CUDA out of memory")  # type: ignore[arg-type]


def _noise(rng: np.random.Generator, sigma: float = 0.002) -> float:
    return float(np.exp(rng.normal(0.0, sigma)))


# Classic law: t = 0.5 ms + 0.1 ms·b + 2 µs·b·s (no attention term).
CLASSIC_A = 5e-4
CLASSIC_C = (1e-4, 2e-6, 0.0)
CLASSIC_B = (1, 2, 4, 8, 16, 32)
CLASSIC_S = (16, 32, 64, 128, 256, 512)


def _classic_points(seed: int = 1) -> list[Point]:
    rng = np.random.default_rng(seed)
    pts = []
    for b in CLASSIC_B:
        for s in CLASSIC_S:
            t = CLASSIC_A + CLASSIC_C[0] * b + CLASSIC_C[1] * b * s
            pts.append(_point("forward", b, s, t * _noise(rng)))
    return pts


# Decoder law, per engine iteration:
#   t = 1 ms + 2 µs·prefill_tokens + 1 ns·prefill_tokens²/seqs + 0.3 ms·decode_seqs + 40 ns·context_tokens
DEC_A = 1e-3
DEC_C = (2e-6, 1e-9, 3e-4, 4e-8)


def _decoder_points(seed: int = 2) -> list[Point]:
    rng = np.random.default_rng(seed)
    pts = []
    for b in (1, 2, 4, 8):
        for s in (32, 64, 128, 256, 512):
            # prefill of b prompts of s tokens: b·s tokens, attention b·s² (= (b·s)²/b)
            t = DEC_A + DEC_C[0] * b * s + DEC_C[1] * b * s * s
            pts.append(_point("prefill", b, s, t * _noise(rng)))
    for b in (1, 2, 4, 8, 16, 32):
        for s in (64, 256, 1024, 2048):
            # decode: b sequences, one token each, over b·s cached tokens
            t = DEC_A + DEC_C[2] * b + DEC_C[3] * b * s
            pts.append(_point("decode", b, s, t * _noise(rng)))
    return pts


def _step_law(b: int, s: int) -> float:
    """Kernels switch at batch 8: latency triples; within a regime it grows with s."""
    return (1e-3 if b < 8 else 3e-3) * (1.0 + s / 500.0)


def _step_points(seed: int = 3) -> list[Point]:
    rng = np.random.default_rng(seed)
    return [
        _point("forward", b, s, _step_law(b, s) * _noise(rng))
        for b in range(1, 17)
        for s in (32, 64, 128, 192, 256, 384, 512)
    ]


# --------------------------------------------------------------------------- the linear candidate


def test_linear_law_of_a_classic_model_is_recovered() -> None:
    lm = fit_latency_model(_classic_points(), decoder=False)
    assert lm is not None
    assert lm.kind == "linear" and lm.target == "batch_time"
    assert lm.features == ["batch_size", "batch_tokens", "batch_tokens_sq"]
    assert lm.n_points == len(CLASSIC_B) * len(CLASSIC_S)
    assert lm.intercept_s == pytest.approx(CLASSIC_A, rel=0.03)
    assert lm.coef_s[0] == pytest.approx(CLASSIC_C[0], rel=0.03)
    assert lm.coef_s[1] == pytest.approx(CLASSIC_C[1], rel=0.03)
    # The law has no attention term: whatever is fitted adds < 1% at the largest point.
    b, s = max(CLASSIC_B), max(CLASSIC_S)
    assert lm.coef_s[2] >= 0
    assert lm.coef_s[2] * b * s * s < 0.01 * (CLASSIC_A + CLASSIC_C[0] * b + CLASSIC_C[1] * b * s)
    # 0.2% noise: held-out error stays well under 1%, and linear beats the trees.
    assert lm.cv_mape < 0.01
    assert set(lm.candidates) == {"linear", "tree_ensemble"}
    assert lm.cv_mape == lm.candidates["linear"] < lm.candidates["tree_ensemble"]
    assert lm.cv_folds == 5


def test_linear_model_extrapolates_the_law_beyond_the_grid() -> None:
    lm = fit_latency_model(_classic_points(), decoder=False)
    assert lm is not None
    x = np.array([[64, 64 * 1024, 64 * 1024**2], [3, 3 * 100, 3 * 100**2]], dtype=float)
    truth = np.array(
        [CLASSIC_A + CLASSIC_C[0] * 64 + CLASSIC_C[1] * 64 * 1024, CLASSIC_A + CLASSIC_C[0] * 3 + CLASSIC_C[1] * 300]
    )
    np.testing.assert_allclose(lm.predict(x), truth, rtol=0.03)


def test_linear_law_of_a_decoder_is_recovered() -> None:
    pts = _decoder_points()
    lm = fit_latency_model(pts, decoder=True)
    assert lm is not None
    assert lm.kind == "linear" and lm.target == "step_time"
    assert lm.features == ["prefill_tokens", "prefill_tokens_sq", "decode_seqs", "context_tokens", "prefill_active"]
    assert lm.n_points == len(pts) == 20 + 24
    assert lm.intercept_s == pytest.approx(DEC_A, rel=0.05)
    names = dict(zip(lm.features, lm.coef_s, strict=True))
    assert names["prefill_tokens"] == pytest.approx(DEC_C[0], rel=0.03)
    assert names["prefill_tokens_sq"] == pytest.approx(DEC_C[1], rel=0.05)
    assert names["decode_seqs"] == pytest.approx(DEC_C[2], rel=0.03)
    assert names["context_tokens"] == pytest.approx(DEC_C[3], rel=0.03)
    assert lm.cv_mape < 0.01
    assert lm.cv_mape == lm.candidates["linear"] < lm.candidates["tree_ensemble"]


# --------------------------------------------------------------------------- the tree candidate


def test_a_step_law_goes_to_the_trees() -> None:
    pts = _step_points()
    lm = fit_latency_model(pts, decoder=False)
    assert lm is not None
    assert lm.kind == "tree_ensemble"
    assert set(lm.candidates) == {"linear", "tree_ensemble"}
    assert lm.cv_mape == lm.candidates["tree_ensemble"]
    # The step is 3x; a straight line cannot follow it, trees can (held out).
    assert lm.candidates["tree_ensemble"] < 0.05
    assert lm.candidates["linear"] > 2 * lm.candidates["tree_ensemble"]
    # Either side of the step, at grid points: the law, to a few %.
    for b, s in ((4, 256), (7, 128), (8, 128), (12, 384)):
        x = np.array([[b, b * s, b * s * s]], dtype=float)
        assert lm.predict(x)[0] == pytest.approx(_step_law(b, s), rel=0.05), (b, s)


def _grid_xy() -> tuple[np.ndarray, np.ndarray]:
    pts = _step_points()
    x = np.array([[p.batch_size, p.batch_size * p.seq_len, p.batch_size * p.seq_len**2] for p in pts], dtype=float)
    y = np.array([p.latency_s.p50 for p in pts])  # type: ignore[union-attr]
    return x, y


def _sklearn_reference(x: np.ndarray, y: np.ndarray, seed: int) -> GradientBoostingRegressor:
    """The ensemble `_fit` builds, fitted by scikit-learn itself (same parameters and seed)."""
    return GradientBoostingRegressor(n_estimators=150, max_depth=3, learning_rate=0.1, random_state=seed).fit(
        x, np.log(y)
    )


def _random_queries(x: np.ndarray, n: int = 500, seed: int = 11) -> np.ndarray:
    """Random rows inside the grid's box and up to twice beyond it (and below its minimum)."""
    rng = np.random.default_rng(seed)
    hi = x.max(axis=0)
    inside = rng.uniform(x.min(axis=0), hi, size=(n, x.shape[1]))
    outside = rng.uniform(-0.5 * hi, 2.0 * hi, size=(n, x.shape[1]))
    return np.vstack([inside, outside, x])


@pytest.mark.parametrize("seed", [0, 5])
def test_numpy_tree_evaluation_equals_sklearn(seed: int) -> None:
    x, y = _grid_xy()
    init, lr, trees = _trees(x, y, seed)
    lm = LatencyModel(
        target="batch_time",
        kind="tree_ensemble",
        features=list(BATCH_FEATURES),
        cv_mape=0.0,
        cv_folds=5,
        candidates={},
        n_points=len(y),
        init=init,
        learning_rate=lr,
        trees=trees,
    )
    gb = _sklearn_reference(x, y, seed)
    assert len(trees) == gb.n_estimators_
    q = _random_queries(x)
    np.testing.assert_allclose(lm.predict(q), np.exp(gb.predict(q)), rtol=1e-9, atol=0)


def test_chosen_tree_model_equals_sklearn_refit_on_every_point() -> None:
    # The stored model is the refit on all points (seed 0), not a CV fold's.
    lm = fit_latency_model(_step_points(), decoder=False, seed=0)
    assert lm is not None and lm.kind == "tree_ensemble"
    x, y = _grid_xy()
    gb = _sklearn_reference(x, y, 0)
    q = _random_queries(x, seed=12)
    np.testing.assert_allclose(lm.predict(q), np.exp(gb.predict(q)), rtol=1e-9, atol=0)


def test_tree_threshold_comparison_matches_sklearn_float32_rounding() -> None:
    """scikit-learn compares ``float32(x) <= threshold``; the stored trees must route the same.

    Just above a threshold past 2**24 (where float32 steps by 2), a value rounds down onto
    the threshold in float32, so scikit-learn goes left; a float64 comparison goes right.
    """
    x, y = _grid_xy()
    # Make the b·s² feature reach past 2**24 so some threshold lies where float32 is coarse.
    x = x * np.array([1.0, 1.0, 200.0])
    init, lr, trees = _trees(x, y, 0)
    gb = _sklearn_reference(x, y, 0)
    lm = LatencyModel(
        target="batch_time",
        kind="tree_ensemble",
        features=list(BATCH_FEATURES),
        cv_mape=0.0,
        cv_folds=5,
        candidates={},
        n_points=len(y),
        init=init,
        learning_rate=lr,
        trees=trees,
    )
    big = sorted(
        {
            (thr, f)
            for t in trees
            for thr, f, left in zip(t.threshold, t.feature, t.left, strict=True)
            if left >= 0 and thr > 2**24
        }
    )
    assert big, "the fixture should produce a threshold above 2**24"
    q = []
    for thr, f in big:
        row = x[0].copy()
        row[f] = thr + 0.9  # float32(thr + 0.9) == thr: scikit-learn sends it left
        assert np.float32(row[f]) == np.float32(thr)
        q.append(row)
    ours, theirs = lm.predict(np.array(q)), np.exp(gb.predict(np.array(q)))
    mismatch = ~np.isclose(ours, theirs, rtol=1e-9, atol=0)
    assert not mismatch.any(), (
        f"LatencyModel.predict routes {int(mismatch.sum())}/{len(q)} rows differently from scikit-learn at "
        "thresholds: it compares float64 features, scikit-learn compares float32(features) <= threshold"
    )


# --------------------------------------------------------------------------- inputs


def test_fewer_than_min_points_measured_gives_none() -> None:
    assert MIN_POINTS == 4
    pts = [_point("forward", b, 64, 1e-3 * b) for b in (1, 2, 4)]
    # failed points do not count towards the minimum
    pts += [_failed("forward", 8, 64), _failed("forward", 16, 64)]
    assert fit_latency_model(pts, decoder=False) is None
    assert fit_latency_model([], decoder=True) is None


def test_four_points_are_enough_and_folds_shrink_to_fit() -> None:
    pts = [_point("forward", b, 64, CLASSIC_A + CLASSIC_C[0] * b + CLASSIC_C[1] * b * 64) for b in (1, 2, 4, 8)]
    lm = fit_latency_model(pts, decoder=False, folds=5)
    assert lm is not None
    assert lm.n_points == 4 and lm.cv_folds == 4


def test_failed_points_are_ignored() -> None:
    pts = _classic_points()
    failed = [_failed("forward", 64, 512), _failed("forward", 64, 1024)]
    with_failed = fit_latency_model(pts[:10] + failed + pts[10:], decoder=False)
    without = fit_latency_model(pts, decoder=False)
    assert with_failed is not None and without is not None
    assert with_failed.n_points == len(pts)
    assert with_failed.model_dump() == without.model_dump()


def test_noise_cv_is_the_median_robust_spread_of_measured_points() -> None:
    # Robust CV = IQR / 1.349 / median (sigma of a normal); outlier-driven CVs are ignored.
    rel = [0.01, 0.05, 0.02, 0.10, 0.03, 0.40, 0.04]  # IQR / median; median 0.04
    pts = [
        _point("forward", b, 64, 1e-3 + 1e-4 * b, cv=0.9, iqr_rel=r) for b, r in zip(range(1, 8), rel, strict=True)
    ]
    pts.append(_failed("forward", 8, 64))
    lm = fit_latency_model(pts, decoder=False)
    assert lm is not None
    assert lm.noise_cv == pytest.approx(0.04 / 1.349)


# --------------------------------------------------------------------------- the artifact


def test_fitted_models_round_trip_through_a_profile_file(tmp_path) -> None:
    classic = fit_latency_model(_classic_points(), decoder=False)
    decoder = fit_latency_model(_decoder_points(), decoder=True)
    stepped = fit_latency_model(_step_points(), decoder=False)
    assert classic is not None and decoder is not None and stepped is not None
    assert (classic.kind, decoder.kind, stepped.kind) == ("linear", "linear", "tree_ensemble")

    def variant(name: str, kind: str, lm: LatencyModel) -> Variant:
        return Variant(
            model=f"builtin:{kind}",
            model_kind=kind,  # type: ignore[arg-type]
            name=name,
            dtype="float32",
            backend="torch-eager",
            device="cpu",
            status="measured",
            latency_model=lm,
        )

    profile = Profile(
        status="complete",
        created_utc="2025-01-01T00:00:00Z",
        tool_version="test",
        hardware=Hardware(cpu_model="test cpu", cpu_count=64, threads_used=1, mem_bytes=2**30),
        variants=[
            variant("fp32", "classic", classic),
            variant("fp32", "decoder", decoder),
            variant("int8", "classic", stepped),
        ],
    )
    path = tmp_path / "profile.json"
    save_profile(profile, path)
    loaded = load_profile(path)
    assert loaded == profile
    rng = np.random.default_rng(4)
    for before, after in zip(profile.variants, loaded.variants, strict=True):
        lm0, lm1 = before.latency_model, after.latency_model
        assert lm0 is not None and lm1 is not None
        n_feat = len(STEP_FEATURES if lm0.target == "step_time" else BATCH_FEATURES)
        q = rng.uniform(0, 1e5, size=(200, n_feat))
        np.testing.assert_array_equal(lm1.predict(q), lm0.predict(q))

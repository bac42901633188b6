"""Fit the latency model of a variant from its measured points (scikit-learn).

Two candidates, chosen by cross-validated MAPE on the points' medians:

- ``linear``: a physically motivated model, ``t = a + Σ c_i · feature_i`` with
  non-negative coefficients (fixed overhead, per-sequence, per-token, attention terms),
  fitted by least squares on relative error (weights ``1/t²``);
- ``tree_ensemble``: gradient-boosted regression trees on ``log t``, which follow the
  steps real kernels take between sizes but do not extrapolate beyond the grid.

The chosen model is refitted on every point and stored as plain numbers (see
:class:`servewise.profile.LatencyModel`), so reading a profile needs no scikit-learn.
"""

from __future__ import annotations

import numpy as np

from servewise.profile import BATCH_FEATURES, STEP_FEATURES, LatencyModel, Point, Tree, batch_features, step_features

__all__ = ["fit_latency_model", "features_of"]

MIN_POINTS = 4


def features_of(points: list[Point], decoder: bool) -> tuple[np.ndarray, np.ndarray]:
    """Feature rows and median latencies (seconds) of the measured points."""
    rows = []
    y = []
    for p in points:
        if p.status != "measured" or p.latency_s is None:
            continue
        b, s = p.batch_size, p.seq_len
        if not decoder:
            rows.append(batch_features(b, s)[0])
        elif p.phase == "prefill":
            rows.append(step_features(b * s, 0, 0, b)[0])
        else:  # decode: b sequences, one new token each, over b·s cached tokens
            rows.append(step_features(0, b, b * s)[0])
        y.append(p.latency_s.p50)
    return np.asarray(rows, dtype=float).reshape(-1, len(STEP_FEATURES if decoder else BATCH_FEATURES)), np.asarray(y)


def _linear(x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    from sklearn.linear_model import LinearRegression

    # Scale features so the positivity-constrained solver is well conditioned.
    scale = np.maximum(np.abs(x).max(axis=0), 1e-12)
    reg = LinearRegression(positive=True).fit(x / scale, y, sample_weight=1.0 / (y * y))
    coef = reg.coef_ / scale
    intercept = float(reg.intercept_)
    if intercept < 0:  # the intercept is not constrained; a negative overhead is unphysical
        reg = LinearRegression(positive=True, fit_intercept=False).fit(
            np.column_stack([np.ones(len(x)), x / scale]), y, sample_weight=1.0 / (y * y)
        )
        intercept = float(reg.coef_[0])
        coef = reg.coef_[1:] / scale
    return intercept, coef


def _trees(x: np.ndarray, y: np.ndarray, seed: int) -> tuple[float, float, list[Tree]]:
    from sklearn.ensemble import GradientBoostingRegressor

    gb = GradientBoostingRegressor(n_estimators=150, max_depth=3, learning_rate=0.1, random_state=seed)
    gb.fit(x, np.log(y))
    init = float(np.mean(np.log(y)))  # the squared-error init is the mean of the target
    trees = []
    for est in gb.estimators_[:, 0]:
        t = est.tree_
        trees.append(
            Tree(
                left=t.children_left.tolist(),
                right=t.children_right.tolist(),
                feature=t.feature.tolist(),
                threshold=t.threshold.tolist(),
                value=t.value[:, 0, 0].tolist(),
            )
        )
    return init, float(gb.learning_rate), trees


def _model(kind: str, x: np.ndarray, y: np.ndarray, seed: int, **common: object) -> LatencyModel:
    if kind == "linear":
        a, c = _linear(x, y)
        return LatencyModel(kind="linear", intercept_s=a, coef_s=c.tolist(), **common)  # type: ignore[arg-type]
    init, lr, trees = _trees(x, y, seed)
    return LatencyModel(kind="tree_ensemble", init=init, learning_rate=lr, trees=trees, **common)  # type: ignore[arg-type]


def fit_latency_model(points: list[Point], decoder: bool, *, seed: int = 0, folds: int = 5) -> LatencyModel | None:
    """Fit both candidates, keep the one with the lower cross-validated MAPE.

    Returns ``None`` with fewer than :data:`MIN_POINTS` measured points.
    """
    from sklearn.metrics import mean_absolute_percentage_error
    from sklearn.model_selection import KFold

    x, y = features_of(points, decoder)
    if len(y) < MIN_POINTS:
        return None
    k = min(folds, len(y))
    cv = KFold(n_splits=k, shuffle=True, random_state=seed)
    names = STEP_FEATURES if decoder else BATCH_FEATURES
    # Run-to-run spread for the simulator's noise: a robust CV (IQR / 1.349 over the
    # median, which is sigma for a normal or narrow log-normal), so that rare outliers
    # (a GC pause, the scheduler) do not inflate every simulated request's variance.
    cvs = [
        float(p.latency_s.iqr / 1.349 / p.latency_s.p50)
        for p in points
        if p.status == "measured" and p.latency_s is not None and p.latency_s.p50 > 0
    ]
    common = {
        "target": "step_time" if decoder else "batch_time",
        "features": list(names),
        "cv_folds": k,
        "n_points": len(y),
        "noise_cv": float(np.median(cvs)) if cvs else 0.0,
    }
    scores: dict[str, float] = {}
    for kind in ("linear", "tree_ensemble"):
        pred = np.empty_like(y)
        for train, test in cv.split(x):
            m = _model(kind, x[train], y[train], seed, cv_mape=0.0, candidates={}, **common)
            pred[test] = m.predict(x[test])
        scores[kind] = float(mean_absolute_percentage_error(y, pred))
    best = min(scores, key=lambda kind: scores[kind])
    return _model(best, x, y, seed, cv_mape=scores[best], candidates=scores, **common)

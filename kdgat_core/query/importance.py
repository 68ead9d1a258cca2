"""Which hyperparameter moves a metric: per param, Spearman's rank correlation and a random forest's permutation
importance (`kdgat importance`, the notebook API).

The params are those that vary among the filtered runs (seed and teacher left out: they tell runs of one
configuration apart). Numeric params are used as numbers; text params as the rank of their sorted values (Spearman
then measures a monotone trend across those levels). The forest is fit on all runs and permuted on the same runs
(no hold-out: this ranks params, it does not predict). scipy and scikit-learn are imported on use.
"""

from __future__ import annotations

from dataclasses import dataclass

from kdgat_core.config import KdgatError
from kdgat_core.query.connection import pa, pc
from kdgat_core.query.groups import NOT_CONFIG_PARAM_LEAVES
from kdgat_core.query.wide import PARAM_PREFIX

MIN_RUNS = 10  # below this nothing is computed
RUNS_PER_PARAM = 5  # fewer runs per varying param: the numbers come with a warning
SEED = 0


@dataclass
class Importance:
    table: pa.Table  # param, kind, levels, spearman, spearman_p, rf_importance, rf_std (best first)
    runs: int
    warning: str | None


def importance(frame: pa.Table, metric: str) -> Importance:
    """Importance of each varying param for `metric` over the runs of `frame` (one row per run)."""
    import numpy as np

    y_all = pc.cast(frame[metric], pa.float64())
    ok = pc.fill_null(pc.and_(pc.is_valid(y_all), pc.is_finite(y_all)), False)
    rows = frame.filter(ok)
    n = rows.num_rows
    if n < MIN_RUNS:
        raise KdgatError(
            f"Only {n} run{'s' if n != 1 else ''} with a finite {metric}; importance needs at least {MIN_RUNS}."
        )
    y = np.asarray(rows[metric].to_pylist(), dtype=float)
    names, kinds, levels, columns = [], [], [], []
    for c in rows.column_names:
        if not c.startswith(PARAM_PREFIX) or c.rsplit(".", 1)[-1] in NOT_CONFIG_PARAM_LEAVES:
            continue
        values = ["" if v is None else str(v) for v in rows[c].to_pylist()]
        distinct = sorted(set(values))
        if len(distinct) < 2:
            continue
        try:
            x = np.array([float(v) if v != "" else np.nan for v in values])
            kind = "number"
            if np.isnan(x).any():
                x[np.isnan(x)] = np.nanmin(x) - 1  # a missing value is a level of its own, below the others
        except ValueError:
            rank = {v: i for i, v in enumerate(distinct)}
            x = np.array([rank[v] for v in values], dtype=float)
            kind = "text"
        names.append(c[len(PARAM_PREFIX) :])
        kinds.append(kind)
        levels.append(len(distinct))
        columns.append(x)
    if not names:
        raise KdgatError(f"No param varies among these {n} runs; there is nothing to rank.")
    from scipy import stats
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.inspection import permutation_importance

    X = np.column_stack(columns)
    rho, rho_p = [], []
    for x in columns:
        if np.all(y == y[0]):
            rho.append(0.0)
            rho_p.append(1.0)
            continue
        r = stats.spearmanr(x, y)
        rho.append(float(r.statistic))
        rho_p.append(float(r.pvalue))
    forest = RandomForestRegressor(n_estimators=200, min_samples_leaf=2, random_state=SEED, n_jobs=1).fit(X, y)
    perm = permutation_importance(forest, X, y, n_repeats=10, random_state=SEED, n_jobs=1)
    order = np.argsort(-perm.importances_mean, kind="stable")
    table = pa.table(
        {
            "param": [names[i] for i in order],
            "kind": [kinds[i] for i in order],
            "levels": pa.array([levels[i] for i in order], pa.int64()),
            "spearman": pa.array([rho[i] for i in order], pa.float64()),
            "spearman_p": pa.array([rho_p[i] for i in order], pa.float64()),
            "rf_importance": pa.array([float(perm.importances_mean[i]) for i in order], pa.float64()),
            "rf_std": pa.array([float(perm.importances_std[i]) for i in order], pa.float64()),
        }
    )
    warning = None
    if n < RUNS_PER_PARAM * len(names):
        warning = (
            f"Only {n} runs for {len(names)} varying params (fewer than {RUNS_PER_PARAM} per param): "
            "these rankings say little; add runs or filter to fewer params."
        )
    return Importance(table, n, warning)

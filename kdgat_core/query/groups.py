"""Groups with statistics: the one group-by implementation behind `kdgat leaderboard --by-config`, `kdgat group`,
the notebook API and the TUI's grouped view (so they show the same n, mean and std for the same runs).

Per group and metric: n (runs with a value; null and NaN are no value, +-inf is one), mean, sample std, median,
min, max and a 95% confidence interval of the mean (Student's t, n - 1 degrees of freedom; none below n = 2).
`runs` counts every run of the group, with or without a value.
"""

from __future__ import annotations

from collections.abc import Sequence

import duckdb

from kdgat_core.config import Tag
from kdgat_core.query.connection import pa, pc, register_arrow
from kdgat_core.query.wide import PARAM_PREFIX

# The convention tags that make a configuration, then every param except these leaves: runs of one configuration
# differ only in them (the seed, and the teacher a student was distilled from).
CONFIG_TAGS = (Tag.DATASET.value, Tag.STAGE.value, Tag.MODEL_SIZE.value, Tag.USE_KD.value)
NOT_CONFIG_PARAM_LEAVES = frozenset({Tag.SEED.value, Tag.TEACHER_RUN_ID.value})
STATS = ("n", "mean", "std", "median", "min", "max", "ci_low", "ci_high")
CONFIDENCE = 0.95


def config_keys(names: Sequence[str]) -> list[str]:
    """The columns that define a configuration: the convention tags, then the params except seed and teacher."""
    have = set(names)
    return [c for c in CONFIG_TAGS if c in have] + [
        c for c in names if c.startswith(PARAM_PREFIX) and c.rsplit(".", 1)[-1] not in NOT_CONFIG_PARAM_LEAVES
    ]


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def group_stats(
    table: pa.Table,
    keys: Sequence[str],
    metrics: Sequence[str],
    order_by: str | None = None,
    descending: bool = True,
) -> pa.Table:
    """One row per distinct value of `keys` (null is a value of its own) over `table`'s rows.

    Columns: the keys, `runs`, `run_ids` (newest first), `run_name` (the newest run's), `seeds`, then for each metric
    column `m`: `m_n`, `m_mean`, `m_std`, `m_median`, `m_min`, `m_max`, `m_ci_low`, `m_ci_high`. Sorted by the
    mean of `order_by` (groups without a value last), else by the keys."""
    keys = list(keys)
    seed = Tag.SEED.value
    cols = [
        *(_q(k) for k in keys),
        "count(*) AS runs",
        "list(run_id ORDER BY start_time DESC NULLS LAST, run_id) AS run_ids",
        "arg_max(run_name, start_time) AS run_name",
        (
            # each seed once: at 100k runs a group holds thousands of runs but a handful of seeds
            f"string_agg(DISTINCT coalesce({_q(seed)}, '?'), ',' ORDER BY coalesce({_q(seed)}, '?')) AS seeds"
            if seed in table.column_names
            else "NULL::VARCHAR AS seeds"
        ),
    ]
    for m in metrics:
        v = f"CAST({_q(m)} AS DOUBLE)"
        ok = f"FILTER (WHERE NOT isnan({v}))"
        cols += [
            f"count({v}) {ok} AS {_q(m + '_n')}",
            f"avg({v}) {ok} AS {_q(m + '_mean')}",
            f"stddev_samp({v}) {ok} AS {_q(m + '_std')}",
            f"quantile_cont({v}, 0.5) {ok} AS {_q(m + '_median')}",
            f"min({v}) {ok} AS {_q(m + '_min')}",
            f"max({v}) {ok} AS {_q(m + '_max')}",
        ]
    group = f"GROUP BY {', '.join(_q(k) for k in keys)}" if keys else ""
    if order_by is not None:
        order = f"ORDER BY {_q(order_by + '_mean')} {'DESC' if descending else 'ASC'} NULLS LAST, runs DESC"
        order += "".join(f", {_q(k)} NULLS LAST" for k in keys)
    else:
        order = "ORDER BY " + ", ".join(f"{_q(k)} NULLS LAST" for k in keys) if keys else ""
    con = duckdb.connect()
    try:
        con.execute("SET python_enable_replacements = false")
        register_arrow(con, "t", table)
        out = con.execute(f"SELECT {', '.join(cols)} FROM t {group} {order}").to_arrow_table()
    finally:
        con.close()
    for m in metrics:
        out = _with_ci(out, m)
    return out


def _with_ci(table: pa.Table, m: str) -> pa.Table:
    """Append m_ci_low, m_ci_high: mean -+ t(0.975, n - 1) * std / sqrt(n)."""
    n = table[m + "_n"].to_pylist()
    quantile = t_quantiles(sorted({k for k in n if k and k >= 2}))
    half = []
    for k, s in zip(n, table[m + "_std"].to_pylist()):
        half.append(None if not k or k < 2 or s is None else quantile[k] * s / k**0.5)
    half_arr = pa.array(half, pa.float64())
    mean = table[m + "_mean"]
    table = table.append_column(m + "_ci_low", pc.subtract(mean, half_arr))
    return table.append_column(m + "_ci_high", pc.add(mean, half_arr))


def t_quantiles(ns: Sequence[int]) -> dict[int, float]:
    """n -> the two-sided 95% quantile of Student's t with n - 1 degrees of freedom (scipy, imported on use)."""
    if not ns:
        return {}
    from scipy import stats

    return {k: float(stats.t.ppf(0.5 + CONFIDENCE / 2, k - 1)) for k in ns}

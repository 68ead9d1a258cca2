"""Is a difference real or noise: paired and unpaired comparisons of two sides of the runs (`kdgat ab`, `kdgat lineage
--stats`, the notebook API).

Paired (runs matched on `pair_on` keys, e.g. dataset, model_size, seed; several runs of one side in a pair are
averaged): the mean difference b - a with a bootstrap 95% CI, Wilcoxon signed-rank and paired t p-values, and
Cohen's d_z. Unpaired: the difference of means with a bootstrap CI, Mann-Whitney U and Welch's t, Cohen's d.
Too few pairs (or runs per side) is a refusal, not a p-value. scipy and numpy are imported on use.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from kdgat_core.config import KdgatError
from kdgat_core.query.connection import pa, pc

MIN_PAIRS = 3  # below this a paired test cannot reach p < 0.05 and a CI means nothing
MIN_PER_SIDE = 2
BOOTSTRAP = 10_000
SEED = 0  # the bootstrap is reproducible: the same runs give the same interval
ALPHA = 0.05


@dataclass
class Comparison:
    """The outcome of one comparison; `sentence` says it in plain words."""

    metric: str
    by: str
    a: str
    b: str
    paired: bool
    n: int  # pairs, or runs of a + runs of b
    n_a: int
    n_b: int
    mean_a: float
    mean_b: float
    diff: float  # b - a
    ci_low: float
    ci_high: float
    p_value: float  # Wilcoxon signed-rank (paired) or Mann-Whitney U (unpaired)
    p_t: float  # paired t or Welch's t
    test: str
    t_test: str
    effect_size: float  # Cohen's d_z (paired) or d (unpaired)
    lower_is_better: bool
    pair_on: list[str] = field(default_factory=list)
    sentence: str = ""

    def table(self) -> pa.Table:
        """statistic | value, for the CLI's table/csv/markdown output."""
        rows = {k: v for k, v in asdict(self).items() if k not in ("sentence",)}
        rows["pair_on"] = ",".join(self.pair_on)
        return pa.table(
            {
                "statistic": pa.array(list(rows), pa.string()),
                "value": pa.array([_fmt(v) for v in rows.values()], pa.string()),
            }
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "nan" if v != v else f"{v:.6g}"
    return str(v)


def sides(values: Sequence[Any], a: str | None, b: str | None, by: str) -> tuple[str, str]:
    """The two values of `by` to compare: given, or the only two there are (sorted: False before True)."""
    present = sorted({str(v) for v in values if v is not None and str(v) != ""})
    if a is not None and b is not None:
        for side in (a, b):
            if side not in present:
                raise KdgatError(f"No run has {by}={side}; its values are: {', '.join(present) or 'none'}.")
        return a, b
    if len(present) != 2:
        raise KdgatError(
            f"{by} has {len(present)} value{'s' if len(present) != 1 else ''} among these runs "
            f"({', '.join(present[:8]) or 'none'}); an A/B comparison needs two: pick them with --a and --b."
        )
    return present[0], present[1]


def compare_sides(
    table: pa.Table,
    by: str,
    metric: str,
    pair_on: Sequence[str] = (),
    a: str | None = None,
    b: str | None = None,
    lower_is_better: bool = False,
) -> Comparison:
    """Compare `metric` between the runs with by=a and by=b (paired on `pair_on` when given)."""
    import numpy as np

    value = pc.cast(table[metric], pa.float64())
    side = pc.cast(table[by], pa.string())
    a, b = sides(side.to_pylist(), a, b, by)
    ok = pc.and_(pc.is_valid(value), pc.invert(pc.fill_null(pc.is_nan(value), True)))
    rows = table.filter(pc.fill_null(ok, False))
    side = pc.cast(rows[by], pa.string()).to_pylist()
    vals = rows[metric].to_pylist()
    if not pair_on:
        xa = np.array([v for s, v in zip(side, vals) if s == a], float)
        xb = np.array([v for s, v in zip(side, vals) if s == b], float)
        if min(len(xa), len(xb)) < MIN_PER_SIDE:
            raise KdgatError(
                f"Too few runs with a {metric} value to compare: {len(xa)} with {by}={a}, {len(xb)} with {by}={b}; "
                f"an unpaired test needs at least {MIN_PER_SIDE} per side."
            )
        return _unpaired(metric, by, a, b, xa, xb, lower_is_better)
    keys = [pc.cast(rows[k], pa.string()).to_pylist() for k in pair_on]
    cells: dict[tuple, dict[str, list[float]]] = {}
    for i, (s, v) in enumerate(zip(side, vals)):
        if s not in (a, b):
            continue
        cells.setdefault(tuple(k[i] for k in keys), {a: [], b: []})[s].append(v)
    pairs = [(float(np.mean(c[a])), float(np.mean(c[b]))) for c in cells.values() if c[a] and c[b]]
    if len(pairs) < MIN_PAIRS:
        raise KdgatError(
            f"Only {len(pairs)} pair{'s' if len(pairs) != 1 else ''} of runs with {by}={a} and {by}={b} share "
            f"{', '.join(pair_on)}; a paired test needs at least {MIN_PAIRS} (pair on fewer keys, or leave out "
            "--pair-on for an unpaired test)."
        )
    xa, xb = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
    return _paired(metric, by, a, b, xa, xb, list(pair_on), lower_is_better)


def paired(
    xa: Sequence[float | None],
    xb: Sequence[float | None],
    metric: str,
    a: str,
    b: str,
    by: str = "",
    pair_on: Sequence[str] = (),
    lower_is_better: bool = False,
) -> Comparison:
    """Paired statistics of two aligned value lists (pairs with a missing or NaN value dropped)."""
    import numpy as np

    both = [(float(x), float(y)) for x, y in zip(xa, xb) if x is not None and y is not None and x == x and y == y]
    if len(both) < MIN_PAIRS:
        raise KdgatError(
            f"Only {len(both)} pair{'s' if len(both) != 1 else ''} with a {metric} value on both sides; "
            f"a paired test needs at least {MIN_PAIRS}."
        )
    return _paired(
        metric,
        by,
        a,
        b,
        np.array([p[0] for p in both]),
        np.array([p[1] for p in both]),
        list(pair_on),
        lower_is_better,
    )


def _paired(
    metric: str, by: str, a: str, b: str, xa: Any, xb: Any, pair_on: list[str], lower_is_better: bool
) -> Comparison:
    import numpy as np
    from scipy import stats

    d = xb - xa
    n = len(d)
    rng = np.random.default_rng(SEED)
    boot = d[rng.integers(0, n, size=(BOOTSTRAP, n))].mean(axis=1)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    if np.allclose(d, 0):
        p_w = p_t = 1.0
    else:
        p_w = float(stats.wilcoxon(d).pvalue)
        p_t = float(stats.ttest_rel(xb, xa).pvalue) if np.std(d) > 0 else 0.0
    sd = float(np.std(d, ddof=1))
    effect = float(np.mean(d) / sd) if sd > 0 else (0.0 if np.mean(d) == 0 else float("inf") * np.sign(np.mean(d)))
    out = Comparison(
        metric, by, a, b, True, n, n, n, float(xa.mean()), float(xb.mean()), float(d.mean()), float(lo), float(hi),
        p_w, p_t, "Wilcoxon signed-rank", "paired t", effect, lower_is_better, pair_on,
    )  # fmt: skip
    out.sentence = _sentence(out)
    return out


def _unpaired(metric: str, by: str, a: str, b: str, xa: Any, xb: Any, lower_is_better: bool) -> Comparison:
    import numpy as np
    from scipy import stats

    rng = np.random.default_rng(SEED)
    ba = xa[rng.integers(0, len(xa), size=(BOOTSTRAP, len(xa)))].mean(axis=1)
    bb = xb[rng.integers(0, len(xb), size=(BOOTSTRAP, len(xb)))].mean(axis=1)
    lo, hi = np.percentile(bb - ba, [2.5, 97.5])
    same = np.allclose(np.concatenate([xa, xb]), xa[0])
    p_u = 1.0 if same else float(stats.mannwhitneyu(xb, xa, alternative="two-sided").pvalue)
    p_t = 1.0 if same else float(stats.ttest_ind(xb, xa, equal_var=False).pvalue)
    na, nb = len(xa), len(xb)
    pooled = np.sqrt(((na - 1) * xa.var(ddof=1) + (nb - 1) * xb.var(ddof=1)) / (na + nb - 2))
    diff = float(xb.mean() - xa.mean())
    effect = float(diff / pooled) if pooled > 0 else 0.0
    out = Comparison(
        metric, by, a, b, False, na + nb, na, nb, float(xa.mean()), float(xb.mean()), diff, float(lo), float(hi),
        p_u, p_t, "Mann-Whitney U", "Welch t", effect, lower_is_better,
    )  # fmt: skip
    out.sentence = _sentence(out)
    return out


def _sentence(c: Comparison) -> str:
    """ "use_kd=True: +0.0040 f1 over use_kd=False (95% CI +0.0010..+0.0070), 5 pairs on seed, p = 0.031 (Wilcoxon)"."""
    who = f"{c.by}={c.b}" if c.by else c.b
    base = f"{c.by}={c.a}" if c.by else c.a
    over = f"{c.n} pairs matched on {', '.join(c.pair_on)}" if c.paired and c.pair_on else (
        f"{c.n} pairs" if c.paired else f"{c.n_b} vs {c.n_a} runs, unpaired"
    )  # fmt: skip
    better = (c.diff < 0) if c.lower_is_better else (c.diff > 0)
    excludes_zero = c.ci_low > 0 or c.ci_high < 0
    if c.p_value < ALPHA and excludes_zero:
        verdict = f"a real difference ({'better' if better else 'worse'})"
    elif c.p_t < ALPHA and excludes_zero:
        verdict = f"{'better' if better else 'worse'} by the t-test only ({c.test} needs more runs to agree)"
    else:
        verdict = "no evidence of a difference"
    return (
        f"{who}: {c.diff:+.4f} {c.metric} against {base} (95% CI {c.ci_low:+.4f}..{c.ci_high:+.4f}) over {over}; "
        f"p = {c.p_value:.2g} ({c.test}; {c.t_test} p = {c.p_t:.2g}), effect size {c.effect_size:+.2f}: {verdict}."
    )

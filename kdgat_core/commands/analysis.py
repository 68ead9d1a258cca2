"""`kdgat` analysis commands that answer research questions: group, ab, summary, importance, plot.

Thin, like every command module: parse arguments, call `kdgat_core.query` (the numbers notebooks and the TUI get),
print with `emit`. scipy (statistics), scikit-learn (importance) and matplotlib (plot) load inside the command that
needs them; none of these commands imports torch or mlflow.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from kdgat_core.commands.analytics import DatasetOpt, KdOpt, SizeOpt, StageOpt, StatusOpt, WhereOpt, _filters, _open
from kdgat_core.commands.comparison import print_comparison
from kdgat_core.commands.options import ForceOpt, FormatOpt, OutputOpt, TrackingUriOpt
from kdgat_core.commands.output import OutputFormat, emit
from kdgat_core.config import KdgatError

if TYPE_CHECKING:
    import pyarrow as pa

    from kdgat_core.query.curves import Curve

ExprOpt = Annotated[
    str,
    typer.Option(
        "--metric", "-m", help="Metric expression: f1, max(val_f1), min(val_loss), argmin(val_loss), val_f1@20."
    ),
]


def _keys(text: str | None) -> list[str]:
    return [k.strip() for k in (text or "").split(",") if k.strip()]


def group_command(
    by: Annotated[str, typer.Option("--by", "-b", help="Comma-separated params/tags, e.g. model_size,use_kd,lr.")],
    metric: ExprOpt = "f1",
    where: WhereOpt = None,
    dataset: DatasetOpt = None,
    stage: StageOpt = None,
    model_size: SizeOpt = None,
    kd: KdOpt = None,
    status: StatusOpt = None,
    tracking_uri: TrackingUriOpt = None,
    fmt: FormatOpt = OutputFormat.table,
    output: OutputOpt = None,
    force: ForceOpt = False,
) -> None:
    """Runs grouped by params and tags: n, mean, std, median, min, max and a 95% CI of a metric per group.

    Example: kdgat group --by model_size,use_kd --metric "max(val_f1)" --dataset hcrl_sa
    """
    keys = _keys(by)
    if not keys:
        raise KdgatError("--by needs at least one param or tag, e.g. --by model_size,use_kd.")
    with _open(tracking_uri) as db:
        table = db.groups(
            keys, metric, where=where, dataset=dataset, kd=kd, arrow=True, **_filters(stage, model_size, status)
        )
    table = table.drop_columns([c for c in ("run_ids", "run_name") if c in table.column_names])
    emit(table, fmt, output, title=f"{metric} by {', '.join(keys)}")


def ab_command(
    by: Annotated[str, typer.Option("--by", "-b", help="The tag or param whose two values are compared, e.g. use_kd.")],
    metric: ExprOpt = "f1",
    pair_on: Annotated[
        Optional[str],
        typer.Option("--pair-on", help="Match runs on these keys (e.g. dataset,model_size,seed) for a paired test."),
    ] = None,
    a: Annotated[Optional[str], typer.Option("--a", help="The baseline value of --by (default: the first).")] = None,
    b: Annotated[Optional[str], typer.Option("--b", help="The other value of --by (default: the second).")] = None,
    where: WhereOpt = None,
    dataset: DatasetOpt = None,
    stage: StageOpt = None,
    model_size: SizeOpt = None,
    kd: KdOpt = None,
    status: StatusOpt = None,
    tracking_uri: TrackingUriOpt = None,
    fmt: FormatOpt = OutputFormat.table,
    output: OutputOpt = None,
    force: ForceOpt = False,
) -> None:
    """Is the difference between two sides real? Bootstrap CI, Wilcoxon / paired t (or Mann-Whitney / Welch), effect.

    Example: kdgat ab --by use_kd --metric f1 --pair-on dataset,model_size,seed --stage evaluation
    """
    if (a is None) != (b is None):
        raise KdgatError("Give both --a and --b, or neither.")
    with _open(tracking_uri) as db:
        result = db.ab(
            by, metric, _keys(pair_on), a, b, where=where, dataset=dataset, kd=kd, **_filters(stage, model_size, status)
        )
    print_comparison(result, fmt, output)


def summary_command(
    run: Annotated[str, typer.Argument(help="Run id, unique id prefix, or run name (newest).")],
    metric: Annotated[Optional[str], typer.Option("--metric", "-m", help="Only this metric key.")] = None,
    tracking_uri: TrackingUriOpt = None,
    fmt: FormatOpt = OutputFormat.table,
    output: OutputOpt = None,
    force: ForceOpt = False,
) -> None:
    """One run's metric summaries from its history: last, min, max, the steps of min and max, the step count."""
    with _open(tracking_uri) as db:
        table = db.metric_summary(run, metric, arrow=True)
    emit(table.drop_columns(["run_id"]), fmt, output, title=f"metric summary of {run}")


def importance_command(
    metric: ExprOpt = "f1",
    where: WhereOpt = None,
    dataset: DatasetOpt = None,
    stage: StageOpt = None,
    model_size: SizeOpt = None,
    kd: KdOpt = None,
    status: StatusOpt = None,
    tracking_uri: TrackingUriOpt = None,
    fmt: FormatOpt = OutputFormat.table,
    output: OutputOpt = None,
    force: ForceOpt = False,
) -> None:
    """Which params move a metric: Spearman correlation and random-forest permutation importance per param.

    Example: kdgat importance --metric f1 --stage evaluation --dataset hcrl_sa
    """
    with _open(tracking_uri) as db:
        result = db.importance(metric, where=where, dataset=dataset, kd=kd, **_filters(stage, model_size, status))
    if result.warning:
        typer.echo(f"kdgat: warning: {result.warning}", err=True)
    emit(result.table, fmt, output, title=f"What moves {metric} ({result.runs} runs)")


FIGURE_SUFFIXES = (".png", ".svg", ".pdf")


def plot_command(
    runs: Annotated[Optional[list[str]], typer.Argument(help="Runs to draw (id, prefix or name).")] = None,
    metric: Annotated[str, typer.Option("--metric", "-m", help="The metric whose history is drawn.")] = "val_loss",
    output: Annotated[Path, typer.Option("--output", "-o", help="The figure: .png, .svg or .pdf.")] = Path("fig.png"),
    group_by: Annotated[
        Optional[str], typer.Option("--group-by", help="Draw groups (mean ± std band) by these params/tags.")
    ] = None,
    parallel: Annotated[
        bool, typer.Option("--parallel", help="A parallel-coordinates figure of params against --metric.")
    ] = False,
    x: Annotated[str, typer.Option("--x", help="x axis: step or time (seconds since the run's first point).")] = "step",
    log_y: Annotated[bool, typer.Option("--log-y", help="Logarithmic y axis.")] = False,
    smooth: Annotated[float, typer.Option("--smooth", help="EMA smoothing weight in [0, 1).")] = 0.0,
    teachers: Annotated[
        bool, typer.Option("--teachers/--no-teachers", help="Draw a KD student's teacher underneath.")
    ] = True,
    where: WhereOpt = None,
    dataset: DatasetOpt = None,
    stage: StageOpt = None,
    model_size: SizeOpt = None,
    kd: KdOpt = None,
    status: StatusOpt = None,
    tracking_uri: TrackingUriOpt = None,
) -> None:
    """Figures for papers (matplotlib): curves of runs or groups, or parallel coordinates of params.

    Examples: kdgat plot RUN_A RUN_B -m val_loss -o loss.pdf;  kdgat plot --group-by use_kd -m val_f1 -o kd.png;
    kdgat plot --parallel -m f1 --stage evaluation -o params.svg
    """
    from kdgat_core.query import curves as cv
    from kdgat_core.query import frame
    from kdgat_core.query.expressions import parse_metric
    from kdgat_core.query.groups import group_stats

    if output.suffix.lower() not in FIGURE_SUFFIXES:
        raise KdgatError(f"-o {output}: write a .png, .svg or .pdf figure.")
    if sum(bool(v) for v in (runs, group_by, parallel)) != 1:
        raise KdgatError("Give runs to draw, or --group-by KEYS, or --parallel (one of them).")
    expr = parse_metric(metric)
    filters = dict(dataset=dataset, kd=kd, **_filters(stage, model_size, status))
    with _open(tracking_uri) as db:
        if parallel:
            table = db.frame([expr.text], where=where, arrow=True, **filters)
            draw_parallel(table, expr.text, output)
        else:
            if runs:
                lines = cv.run_curves(db, runs, expr.key, x, teachers)
            else:
                from kdgat_core.query.db import RunFilter

                table = frame.build(db, [], RunFilter(**filters), where)
                keys = [frame.resolve_column(k, table.column_names) for k in _keys(group_by)]
                groups = group_stats(table, keys, [])
                named = [
                    (" ".join(f"{k.removeprefix('params.')}={r[k]}" for k in keys), r["run_ids"])
                    for r in groups.to_pylist()
                ]
                lines = cv.group_curves(db, named, expr.key, x)
            draw_curves(lines, output, expr.key, x, log_y, smooth)
    typer.echo(f"wrote {output}", err=True)


def draw_curves(lines: list[Curve], output: Path, metric: str, x: str, log_y: bool, smooth: float) -> None:
    """Lines (teachers grey and dashed, underneath), groups with a ± std band, stable colours; saved to `output`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from kdgat_core.query.curves import ema

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=150)
    for c in sorted(lines, key=lambda c: not c.teacher):
        y = ema(c.y, smooth) if smooth else c.y
        ax.plot(
            c.x, y, color=c.colour, lw=1.4, ls="--" if c.teacher else "-", label=c.label, zorder=1 if c.teacher else 2
        )
        if c.std is not None:
            lo = [m - s for m, s in zip(y, c.std)]
            hi = [m + s for m, s in zip(y, c.std)]
            ax.fill_between(c.x, lo, hi, color=c.colour, alpha=0.18, lw=0)
    ax.set_xlabel("step" if x == "step" else "seconds since the first point")
    ax.set_ylabel(metric)
    if log_y:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    _save(fig, output)


def draw_parallel(table: pa.Table, metric: str, output: Path) -> None:
    """One polyline per run across its varying params (each scaled to [0, 1]) and the metric, coloured by the metric."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from kdgat_core.query.groups import NOT_CONFIG_PARAM_LEAVES

    rows = table.to_pylist()
    rows = [r for r in rows if r.get(metric) is not None and r[metric] == r[metric]]
    params = [
        c
        for c in table.column_names
        if c.startswith("params.")
        and c.rsplit(".", 1)[-1] not in NOT_CONFIG_PARAM_LEAVES
        and len({r.get(c) for r in rows}) > 1
    ]
    if len(rows) < 2 or not params:
        raise KdgatError(f"Parallel coordinates need at least two runs with a {metric} and a param that varies.")
    axes, ticks = [], []
    for c in params + [metric]:
        values = [r.get(c) for r in rows]
        try:
            num = np.array([float(v) if v is not None else np.nan for v in values])
            labels = None
        except (TypeError, ValueError):
            levels = sorted({str(v) for v in values})
            num = np.array([levels.index(str(v)) for v in values], float)
            labels = levels
        lo, hi = np.nanmin(num), np.nanmax(num)
        axes.append((num - lo) / (hi - lo) if hi > lo else np.full_like(num, 0.5))
        ticks.append((lo, hi, labels))
    data = np.column_stack(axes)
    score = np.array([r[metric] for r in rows], float)
    fig, ax = plt.subplots(figsize=(max(6, 1.4 * len(axes)), 4.2), dpi=150)
    cmap = plt.get_cmap("viridis")
    span = (score.max() - score.min()) or 1.0
    for line, s in zip(data, score):
        ax.plot(range(len(axes)), line, color=cmap((s - score.min()) / span), alpha=0.6, lw=1)
    ax.set_xticks(range(len(axes)), [c.removeprefix("params.") for c in params] + [metric], rotation=20, fontsize=8)
    for i, (lo, hi, labels) in enumerate(ticks):
        ax.text(i, -0.06, ", ".join(labels[:4]) if labels else f"{lo:.3g}", ha="center", va="top", fontsize=6)
        ax.text(i, 1.04, "" if labels else f"{hi:.3g}", ha="center", va="bottom", fontsize=6)
        ax.axvline(i, color="#bbbbbb", lw=0.8, zorder=0)
    ax.set_yticks([])
    ax.set_ylim(-0.12, 1.1)
    fig.colorbar(plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(score.min(), score.max())), ax=ax, label=metric)
    fig.tight_layout()
    _save(fig, output)


def _save(fig: Any, output: Path) -> None:
    import matplotlib.pyplot as plt

    try:
        fig.savefig(output)
    except OSError as exc:
        raise KdgatError(f"Cannot write {output}: {exc.strerror or exc}.") from None
    finally:
        plt.close(fig)

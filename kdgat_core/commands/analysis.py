"""`kdgat` analysis commands that answer research questions: group, ab, summary, importance, plot.

Thin, like every command module: parse arguments, call `kdgat_core.query` (the numbers notebooks and the TUI get),
print with `emit`. scipy (statistics), scikit-learn (importance) and matplotlib (plot) load inside the command that
needs them; none of these commands imports torch or mlflow.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from kdgat_core.commands.analytics import DatasetOpt, KdOpt, SizeOpt, StageOpt, StatusOpt, WhereOpt, _filters, _open
from kdgat_core.commands.options import FormatOpt, OutputOpt, TrackingUriOpt
from kdgat_core.commands.output import OutputFormat, emit, render, write_output
from kdgat_core.config import KdgatError

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


def print_comparison(result, fmt: OutputFormat, output: Path | None) -> None:
    """The sentence first on a terminal (then the numbers); json is one object."""
    if fmt is OutputFormat.json:
        import json

        write_output(json.dumps(result.as_dict(), indent=2) + "\n", output)
        return
    if fmt is OutputFormat.table:
        write_output(result.sentence + "\n\n" + render(result.table(), fmt), output)
        return
    emit(result.table(), fmt, output, title=result.sentence)


def summary_command(
    run: Annotated[str, typer.Argument(help="Run id, unique id prefix, or run name (newest).")],
    metric: Annotated[Optional[str], typer.Option("--metric", "-m", help="Only this metric key.")] = None,
    tracking_uri: TrackingUriOpt = None,
    fmt: FormatOpt = OutputFormat.table,
    output: OutputOpt = None,
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
) -> None:
    """Which params move a metric: Spearman correlation and random-forest permutation importance per param.

    Example: kdgat importance --metric f1 --stage evaluation --dataset hcrl_sa
    """
    with _open(tracking_uri) as db:
        result = db.importance(metric, where=where, dataset=dataset, kd=kd, **_filters(stage, model_size, status))
    if result.warning:
        typer.echo(f"kdgat: warning: {result.warning}", err=True)
    emit(result.table, fmt, output, title=f"What moves {metric} ({result.runs} runs)")

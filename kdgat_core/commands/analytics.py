"""`kdgat` analytics commands: leaderboard, compare, diff, sweep, dataset, lineage, runs, query, backup, doctor.

Thin: parse arguments, call `kdgat_core.query` (the same functions notebooks and the TUI use), print with `emit`.
Results stay Arrow tables on this path: importing pandas would cost ~0.4 s of every `kdgat leaderboard`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from kdgat_core.commands.options import MAX_ROWS, ForceOpt, FormatOpt, OutputOpt, TrackingUriOpt
from kdgat_core.commands.output import OutputFormat, emit, write_output
from kdgat_core.config import SQL_TIMEOUT_S, KdgatError, ModelSize, RunStatus, Stage

if TYPE_CHECKING:  # imported by the commands that run, not when the CLI starts
    import pyarrow as pa
    from rich.tree import Tree

    from kdgat_core.query import TrackingDB

DatasetOpt = Annotated[Optional[str], typer.Option("--dataset", "-d", help="Only runs of this dataset (tag dataset).")]
StageOpt = Annotated[
    Optional[str], typer.Option("--stage", "-s", help="Only this stage: autoencoder|curriculum|fusion|evaluation.")
]
SizeOpt = Annotated[Optional[str], typer.Option("--model-size", help="Only teacher or student runs.")]
KdOpt = Annotated[
    Optional[bool], typer.Option("--kd/--no-kd", help="Only runs with (or without) knowledge distillation.")
]
StatusOpt = Annotated[
    Optional[str], typer.Option("--status", help="Only runs with this status tag: running|complete|failed.")
]
MetricOpt = Annotated[
    str,
    typer.Option(
        "--metric",
        "-m",
        help="Metric: f1, val_loss, test_02_unknown_vehicle_known_attack/f1, max(val_f1), argmin(val_loss), val_f1@20.",
    ),
]
WhereOpt = Annotated[
    Optional[str],
    typer.Option("--where", "-w", help='Filter, as the TUI\'s /: e.g. "(dataset=hcrl_sa | dataset=set_01) f1>0.9".'),
]


def _open(tracking_uri: str | None) -> TrackingDB:
    from kdgat_core.query import open_db

    return open_db(tracking_uri)


def _filters(stage: str | None, model_size: str | None, status: str | None) -> dict:
    """Validate enum-valued filters early: a typo is a clear sentence, not an empty table."""
    return {
        "stage": Stage.parse(stage, "stage").value if stage else None,
        "model_size": ModelSize.parse(model_size, "model size").value if model_size else None,
        "status": RunStatus.parse(status, "status").value if status else None,
    }


def leaderboard_command(
    metric: MetricOpt = "f1",
    top: Annotated[int, typer.Option("--top", "-n", help="How many rows.", min=1, max=MAX_ROWS)] = 10,
    dataset: DatasetOpt = None,
    stage: StageOpt = None,
    model_size: SizeOpt = None,
    kd: KdOpt = None,
    status: StatusOpt = None,
    by_config: Annotated[
        bool, typer.Option("--by-config", help="Group runs that differ only in seed: mean, std, n.")
    ] = False,
    where: WhereOpt = None,
    group_by: Annotated[
        Optional[str], typer.Option("--group-by", help="Group by params/tags instead (as `kdgat group --by`).")
    ] = None,
    tracking_uri: TrackingUriOpt = None,
    fmt: FormatOpt = OutputFormat.table,
    output: OutputOpt = None,
    force: ForceOpt = False,
) -> None:
    """The best runs by a final metric (val_loss, fpr, fnr and other losses sort ascending).

    Example: kdgat leaderboard --metric f1 --dataset hcrl_sa --stage evaluation --top 10
    """
    if group_by:  # as `kdgat group --by`
        keys = [k.strip() for k in group_by.split(",") if k.strip()]
        with _open(tracking_uri) as db:
            groups = db.groups(
                keys, metric, where=where, dataset=dataset, kd=kd, arrow=True, **_filters(stage, model_size, status)
            )
        emit(groups.drop_columns(["run_ids", "run_name"]), fmt, output, title=f"{metric} by {', '.join(keys)}")
        return
    with _open(tracking_uri) as db:
        kwargs = dict(
            metric=metric,
            top=top,
            dataset=dataset,
            kd=kd,
            by_config=by_config,
            where=where,
            **_filters(stage, model_size, status),
        )
        # plain rows: no pyarrow import (0.2 s); an empty board comes as Arrow so its header still prints
        table = db.leaderboard(**kwargs, rows=True) or db.leaderboard(**kwargs, arrow=True)
    where = ", ".join(
        f"{k}={v}"
        for k, v in (
            ("dataset", dataset),
            ("stage", stage),
            ("model_size", model_size),
            ("kd", kd),
            ("status", status),
            ("where", where),
        )
        if v is not None
    )
    emit(
        table,
        fmt,
        output,
        title=f"Leaderboard by {metric}{' per config' if by_config else ''}{' (' + where + ')' if where else ''}",
    )


def compare_command(
    runs: Annotated[list[str], typer.Argument(help="Two or more runs: id, unique id prefix, or run name (newest).")],
    tracking_uri: TrackingUriOpt = None,
    fmt: FormatOpt = OutputFormat.table,
    output: OutputOpt = None,
    force: ForceOpt = False,
) -> None:
    """Runs' final metrics side by side, with the difference to the first and which run is best per metric."""
    if len(runs) < 2:
        raise KdgatError("compare needs at least two runs.")
    with _open(tracking_uri) as db:
        table = db.compare(*runs, arrow=True)
    meta = table.schema.metadata or {}
    names = [c for c in table.column_names[1:] if f"kdgat.{c}".encode() in meta]
    title = "   ".join(f"{n} = {meta[f'kdgat.{n}'.encode()].decode()}" for n in names)
    emit(table, fmt, output, title=title)


def diff_command(
    runs: Annotated[list[str], typer.Argument(help="Two or more runs (id, prefix or name).")],
    all_params: Annotated[bool, typer.Option("--all", help="Show every param, not only those that differ.")] = False,
    tracking_uri: TrackingUriOpt = None,
    fmt: FormatOpt = OutputFormat.table,
    output: OutputOpt = None,
    force: ForceOpt = False,
) -> None:
    """The config params that differ between runs (one column per run)."""
    with _open(tracking_uri) as db:
        table = db.config_diff(runs, all=all_params, arrow=True)
    if table.num_rows == 0 and not all_params:
        typer.echo("The runs' params are identical (use --all to list them).", err=True)
    emit(table, fmt, output, title="Params" + ("" if all_params else " that differ"))


def sweep_command(
    param: Annotated[
        str, typer.Option("--param", "-p", help="Param key (dotted, e.g. train.lr; a unique leaf like lr works).")
    ],
    metric: MetricOpt = "f1",
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
    """Per value of a param: count, mean, std, min and max of a final metric."""
    with _open(tracking_uri) as db:
        table = db.sweep(param, metric, dataset=dataset, kd=kd, arrow=True, **_filters(stage, model_size, status))
    emit(table, fmt, output, title=f"{metric} by {param}")


def dataset_command(
    name: Annotated[str, typer.Argument(help="Dataset name, e.g. hcrl_sa.")],
    metric: MetricOpt = "f1",
    tracking_uri: TrackingUriOpt = None,
    fmt: FormatOpt = OutputFormat.table,
    output: OutputOpt = None,
    force: ForceOpt = False,
) -> None:
    """A dataset's runs by stage, model size and KD: counts per status and the best run of each group."""
    with _open(tracking_uri) as db:
        table = db.dataset_summary(name, metric=metric, arrow=True)
    emit(table, fmt, output, title=f"{name}: runs by stage, size and KD (best by {metric})")


def lineage_command(
    run: Annotated[Optional[str], typer.Argument(help="Only the tree around this run (id, prefix or name).")] = None,
    dataset: DatasetOpt = None,
    metric: MetricOpt = "f1",
    stats: Annotated[
        bool, typer.Option("--stats", help="Paired statistics of KD students against their teachers.")
    ] = False,
    tracking_uri: TrackingUriOpt = None,
    fmt: FormatOpt = OutputFormat.table,
    output: OutputOpt = None,
    force: ForceOpt = False,
) -> None:
    """Teacher -> student trees (from teacher_run_id tags) with each student's delta to its teacher, and retries
    (kdgat resubmit) under the runs they retry."""
    if stats:
        from kdgat_core.commands.comparison import print_comparison

        with _open(tracking_uri) as db:
            result = db.lineage_stats(metric, dataset=dataset, run=run)
        print_comparison(result, fmt, output)
        return
    with _open(tracking_uri) as db:
        table = db.lineage(run=run, dataset=dataset, metric=metric, arrow=True, retries=True)
    if fmt is not OutputFormat.table:
        emit(table, fmt, output, title=f"Lineage ({metric})")
        return
    write_output(render_lineage_tree(table, metric), output)


def runs_command(
    dataset: DatasetOpt = None,
    stage: StageOpt = None,
    model_size: SizeOpt = None,
    kd: KdOpt = None,
    status: StatusOpt = None,
    include_deleted: Annotated[bool, typer.Option("--include-deleted", help="Also list deleted runs.")] = False,
    limit: Annotated[
        Optional[int], typer.Option("--limit", help="At most this many rows (newest first).", min=0, max=MAX_ROWS)
    ] = None,
    where: WhereOpt = None,
    view: Annotated[
        Optional[str], typer.Option("--view", "-V", help="A saved view of kdgat.toml ([views.NAME]).")
    ] = None,
    tracking_uri: TrackingUriOpt = None,
    fmt: FormatOpt = OutputFormat.table,
    output: OutputOpt = None,
    force: ForceOpt = False,
) -> None:
    """List runs (newest first), e.g. kdgat runs --status failed; kdgat runs --view kd-students."""
    if where or view:
        from kdgat_core.query.saved_views import apply_view, get_view

        saved = get_view(view) if view else None
        with _open(tracking_uri) as db:
            table = apply_view(db, saved, where, dataset=dataset, kd=kd, **_filters(stage, model_size, status))
        if limit is not None:
            table = table.slice(0, max(limit, 0))
        emit(table, fmt, output, title=f"{table.num_rows} {'groups' if saved and saved.group_by else 'runs'}")
        return
    with _open(tracking_uri) as db:
        table = db.runs(
            dataset=dataset,
            kd=kd,
            include_deleted=include_deleted,
            arrow=True,
            **_filters(stage, model_size, status),
        )
    if limit is not None:
        table = table.slice(0, max(limit, 0))
    if fmt is OutputFormat.table:
        keep = [
            "run_id",
            "run_name",
            "status",
            "mlflow_status",
            "start_time",
            "duration_s",
            "f1",
            "val_loss",
            "error_msg",
        ]
        if include_deleted:
            keep.insert(4, "lifecycle")
        table = table.select([c for c in keep if c in table.column_names])
    emit(table, fmt, output, title=f"{table.num_rows} runs")


def query_command(
    sql: Annotated[
        Optional[str],
        typer.Argument(
            help="One read-only SELECT over the views runs, params, tags, metrics, metric_history, lineage, "
            "runs_wide, jobs; '-' reads it from stdin."
        ),
    ] = None,
    sql_file: Annotated[
        Optional[Path], typer.Option("--file", help="Read the SQL from this file ('-': stdin), for long queries.")
    ] = None,
    timeout: Annotated[
        float, typer.Option("--timeout", help="Stop the query after this many seconds (0: no limit).")
    ] = SQL_TIMEOUT_S,
    tracking_uri: TrackingUriOpt = None,
    fmt: FormatOpt = OutputFormat.table,
    output: OutputOpt = None,
    force: ForceOpt = False,
) -> None:
    """Run SQL against the read-only views, e.g. kdgat query "SELECT * FROM runs WHERE dataset = 'hcrl_sa'"."""
    text = _sql_text(sql, sql_file)
    if not timeout >= 0:  # also refuses nan
        raise KdgatError(f"--timeout must be 0 (no limit) or a number of seconds, not {timeout:g}.")
    from kdgat_core.query.sql_guard import check_user_sql, table_names

    try:
        if "jobs" in table_names(check_user_sql(text)):  # the scheduler's facts (one sacct call), only when asked
            from kdgat_core.commands.cluster import open_with_jobs

            with open_with_jobs(tracking_uri) as db:
                table = db.sql(text, arrow=True, timeout_s=timeout or None)
        else:
            with _open(tracking_uri) as db:
                table = db.sql(text, arrow=True, timeout_s=timeout or None)
    except KeyboardInterrupt:
        # 130 = 128 + SIGINT, the shell's code for Ctrl-C: scripts tell "stopped by the user" from bad input (2)
        typer.echo("kdgat: query interrupted (Ctrl-C); nothing was printed or written.", err=True)
        raise typer.Exit(130) from None
    emit(table, fmt, output)


def _sql_text(sql: str | None, sql_file: Path | None) -> str:
    """The SQL of `kdgat query`: the argument, or `--file` (a long query exceeds the argument length limit), or stdin."""
    import sys

    if (sql is None) == (sql_file is None):
        raise KdgatError("Give the SQL as an argument, or with --file FILE (or '-' for stdin), not both or neither.")
    if sql is not None and sql != "-":
        return sql
    try:
        if sql == "-" or str(sql_file) == "-":
            return sys.stdin.buffer.read().decode("utf-8")
        return sql_file.read_text(encoding="utf-8")  # type: ignore[union-attr]
    except UnicodeDecodeError:
        raise KdgatError(f"{sql_file or 'stdin'} is not UTF-8 text.") from None
    except OSError as exc:
        raise KdgatError(f"Cannot read {sql_file}: {exc.strerror or exc}.") from None


def backup_command(
    dest: Annotated[Path, typer.Argument(help="Where to write the copy (a new file).")],
    force: Annotated[bool, typer.Option("--force", help="Overwrite DEST if it exists.")] = False,
    tracking_uri: TrackingUriOpt = None,
) -> None:
    """A consistent copy of the tracking DB while writers are active (SQLite's online backup), integrity-checked."""
    from kdgat_core.query.backup import backup_db

    report = backup_db(tracking_uri, dest, force=force)
    typer.echo(
        f"backed up {report['source']} -> {report['dest']} ({report['pages']} pages, "
        f"{report['bytes'] / 1e6:.1f} MB, {report['seconds']:.1f} s); integrity_check: ok"
    )


def doctor_command(
    tracking_uri: TrackingUriOpt = None,
    fmt: FormatOpt = OutputFormat.table,
    output: OutputOpt = None,
    force: ForceOpt = False,
) -> None:
    """Which stores are in force and why (the writers' tracking URI, the reader's), the backend and its server,
    whether the reader's connection is read-only, MLflow's schema version and row counts. Passwords are masked."""
    from kdgat_core.commands.store import doctor_report

    rows, problem = doctor_report(tracking_uri)
    if problem:
        rows.append({"check": "problem", "value": problem})
    emit(rows, fmt, output, title="kdgat doctor")
    if problem:
        raise typer.Exit(1)


def render_lineage_tree(table: pa.Table, metric: str) -> str:
    """A rich Tree: teacher -> students, each student with its metric and its delta to the teacher; then the retry
    chains (`link = 'retry'` rows), each retry under the run it retries."""
    import io

    from rich.console import Console
    from rich.markup import escape
    from rich.tree import Tree

    from kdgat_core.config import retry_label

    def fmt(v: float | None) -> str:
        return "-" if v is None or v != v else f"{v:.4f}"

    rows = table.to_pylist()
    kd = [r for r in rows if r.get("link", "kd") == "kd"]
    retries = [r for r in rows if r.get("link") == "retry"]
    root = Tree(f"lineage ({metric}; delta = student - teacher)")
    if not kd:
        root.add("no KD students (no run has a teacher_run_id tag)")
    teachers: dict[str, Tree] = {}
    for row in kd:
        tid = row["teacher_run_id"]
        if tid not in teachers:
            name = escape(row["teacher_name"] or "(teacher not found or deleted)")
            teachers[tid] = root.add(f"[bold]{name}[/] {tid[:8]}  {metric}={fmt(row[f'teacher_{metric}'])}")
        delta = row[f"delta_{metric}"]
        sign = "" if delta is None or delta != delta else ("+" if delta >= 0 else "")
        retry = f"  {retry_label(row['retry_of'])}" if row.get("retry_of") else ""
        teachers[tid].add(
            f"{escape(row['student_name'] or '')} {row['student_run_id'][:8]}  {metric}={fmt(row[f'student_{metric}'])}"
            f"  delta={sign}{fmt(delta)}{escape(retry)}"
        )
    if retries:
        branch = root.add("retries (kdgat resubmit; each under the run it retries)")
        nodes: dict[str, Tree] = {}
        for row in retries:  # chain by chain, in attempt order: a retry's parent is always placed first
            parent = row["teacher_run_id"]
            if parent not in nodes:
                if parent.startswith("job "):
                    head = f"[bold]{parent}[/] (it died before opening a run)"
                else:
                    name = escape(row["teacher_name"] or "(run not found or deleted)")
                    status = row.get("teacher_status") or ""
                    head = f"[bold]{name}[/] {parent[:8]}  {status}  {metric}={fmt(row[f'teacher_{metric}'])}"
                nodes[parent] = branch.add(head)
            nodes[row["student_run_id"]] = nodes[parent].add(
                f"{escape(retry_label(parent))}: {escape(row['student_name'] or '')} {row['student_run_id'][:8]}  "
                f"{row.get('student_status') or ''}  {metric}={fmt(row[f'student_{metric}'])}"
            )
    buf = io.StringIO()
    Console(file=buf, width=160, force_terminal=False, color_system=None).print(root)
    return buf.getvalue()

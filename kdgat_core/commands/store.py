"""`kdgat` as a whole and its tracking store: the global `--read-uri`, `kdgat version` and `kdgat migrate`."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

ReadUriOpt = Annotated[
    Optional[str],
    typer.Option(
        "--read-uri",
        help="The database readers open when jobs write through an MLflow server, e.g. "
        "postgresql://reader@host/mlflow (else KDGAT_READ_URI, kdgat.toml \\[tracking] read_uri, the tracking URI).",
    ),
]


def global_options(read_uri: ReadUriOpt = None) -> None:
    """kdgat: CAN intrusion-detection experiments on GNNs - data, training, tracking, analytics, SLURM."""
    from kdgat_core.query.stores import set_read_uri_flag

    set_read_uri_flag(read_uri)


def version_command() -> None:
    """Print kdgat's version."""
    from kdgat_core import __version__

    typer.echo(__version__)


def doctor_report(tracking_uri: str | None) -> tuple[list[dict], str | None]:
    """`kdgat doctor`'s rows (check, value) and the problem found, if any; every URI with its password masked."""
    from kdgat_core.config import KdgatError, load_settings, resolve_tracking_uri, sqlite_path
    from kdgat_core.query import open_db
    from kdgat_core.query.stores import is_postgres_uri, is_server_uri, mask_uri, resolve_reader_uri

    settings = load_settings()
    resolved = resolve_tracking_uri(tracking_uri, settings)
    read = resolve_reader_uri(tracking_uri)
    rows = [
        {"check": "tracking URI", "value": mask_uri(resolved.value)},
        {"check": "chosen by", "value": resolved.source},
        {"check": "kdgat.toml", "value": str(settings.path) if settings.path else "none found"},
    ]
    if settings.path is not None and not settings.section("tracking").get("uri"):
        rows.append({"check": "note", "value": f"{settings.path} gives no tracking URI (no [tracking] uri)."})
    rows.append({"check": "read URI", "value": mask_uri(read.value) if read != resolved else "(the tracking URI)"})
    if read != resolved:
        rows.append({"check": "read URI chosen by", "value": read.source})
    uri = read.value
    if is_server_uri(uri):
        rows.append({"check": "backend", "value": "MLflow tracking server (writers only)"})
        return rows, (
            f"'{mask_uri(uri)}' is an MLflow server; kdgat reads its database: set [tracking] read_uri in "
            "kdgat.toml, KDGAT_READ_URI or --read-uri (e.g. postgresql://reader@host/mlflow)."
        )
    path = None if is_postgres_uri(uri) else sqlite_path(uri, must_exist=False)
    if path is None and not is_postgres_uri(uri):
        return rows, f"'{mask_uri(uri)}' is not a store kdgat reads (sqlite:///path or postgresql://...)."
    labels = [
        ("backend", "backend"),
        ("server_version", "server"),
        ("role", "role"),
        ("read_only", "read-only"),
        ("schema_version", "MLflow schema version (alembic)"),
        ("schema_state", "MLflow schema"),
        ("journal", "journal"),
        ("size_bytes", "size (bytes)"),
        ("experiments", "experiments"),
        ("deleted_experiments", "  deleted"),
        ("runs", "runs"),
        ("deleted_runs", "  deleted"),
        ("final_metrics", "final metric values"),
        ("metric_points", "metric points"),
        ("params", "params"),
        ("tags", "tags"),
        ("cache_dir", "read cache"),
    ]
    if path is not None:
        rows.append({"check": "backend", "value": "sqlite"})
        rows.append({"check": "file", "value": str(path.expanduser().absolute())})
        rows.append({"check": "exists", "value": "yes" if path.is_file() else "no"})
        if not path.is_file():
            return rows, f"Tracking database {path} does not exist; nothing has been tracked there yet."
        rows.append({"check": "read-only", "value": "yes (READ_ONLY attach)"})
        labels = labels[1:]
    try:
        with open_db(tracking_uri) as db:
            info = db.info()
    except KdgatError as exc:
        return rows, str(exc)
    rows += [{"check": label, "value": str(info.get(key))} for key, label in labels if key in info]
    if info.get("schema_advice"):  # an older schema: readable, but MLflow will not write to it
        rows.append({"check": "note", "value": info["schema_advice"]})
    return rows, None


def migrate_command(
    src: Annotated[
        str, typer.Argument(help="The SQLite store to copy: sqlite:///path/mlflow.db or a path (only read).")
    ],
    dest: Annotated[
        str,
        typer.Argument(
            help="An empty PostgreSQL database with MLflow's schema (`mlflow db upgrade`), postgresql://..."
        ),
    ],
    verify: Annotated[
        bool, typer.Option("--verify/--no-verify", help="Compare mlflow.search_runs on both stores afterwards.")
    ] = True,
) -> None:
    """Move an MLflow SQLite store into PostgreSQL, every id kept: one transaction, then verified.

    Example: kdgat migrate sqlite:///old/mlflow.db postgresql://mlflow@dbhost/mlflow
    """
    from kdgat_core.tracking.migrate import migrate

    report = migrate(src, dest, progress=lambda message: typer.echo(f"migrate: {message}", err=True), verify=verify)
    rows = sum(report.tables.values())
    busy = ", ".join(f"{t} {n:,}" for t, n in report.tables.items() if n)
    typer.echo(
        f"migrated {report.source} -> {report.dest} (alembic {report.schema_version}): {rows:,} rows ({busy}) in "
        f"{report.seconds:.1f} s; row counts verified"
        + (f"; search_runs agrees on {report.verified_runs:,} runs ({report.verify_seconds:.1f} s)" if verify else "")
    )

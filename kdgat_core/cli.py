"""The `kdgat` command line: thin. Parses arguments, calls the layers, prints what they return.

Commands are top-level functions in `kdgat_core/commands/<area>.py`; the shared options live in
`kdgat_core/commands/options.py` and the output helpers in `kdgat_core/commands/output.py`. This module holds the app,
the one list that registers every command, and the one place where a KdgatError becomes a sentence on stderr.
Heavy modules (torch, torch_geometric, mlflow) are imported inside the commands that need them, never here.
"""

from __future__ import annotations

import sys

import typer

from kdgat_core.commands import analysis, analytics, annotate, cluster, data, slurm, store, train
from kdgat_core.config import KdgatError

app = typer.Typer(
    name="kdgat",
    help="kdgat: CAN intrusion-detection experiments on GNNs - data, training, tracking, analytics, SLURM.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def version_command() -> None:
    """Print kdgat's version."""
    from kdgat_core import __version__

    typer.echo(__version__)


# Every command, in the order `kdgat --help` lists them: the one place a command is registered.
app.callback()(store.global_options)
app.command("version")(version_command)
app.command("leaderboard")(analytics.leaderboard_command)
app.command("compare")(analytics.compare_command)
app.command("diff")(analytics.diff_command)
app.command("sweep")(analytics.sweep_command)
app.command("dataset")(analytics.dataset_command)
app.command("lineage")(analytics.lineage_command)
app.command("runs")(analytics.runs_command)
app.command("query")(analytics.query_command)
app.command("backup")(analytics.backup_command)
app.command("doctor")(analytics.doctor_command)
app.command("migrate")(store.migrate_command)
app.command("group")(analysis.group_command)
app.command("ab")(analysis.ab_command)
app.command("summary")(analysis.summary_command)
app.command("importance")(analysis.importance_command)
app.command("plot")(analysis.plot_command)
app.command("tag")(annotate.tag_command)
app.command("note")(annotate.note_command)
app.command("delete")(annotate.delete_command)
app.command("restore")(annotate.restore_command)
app.command("ingest")(data.ingest_command)
app.command("datasets")(data.datasets_command)
app.command("graphs")(data.graphs_command)
app.command("synth")(data.synth_command)
app.command("run", help=train.RUN_HELP)(train.run_command)
app.command("config-keys")(train.config_keys_command)
app.command("submit")(slurm.submit_command)
app.command("jobs")(slurm.jobs_command)
app.command("logs")(slurm.logs_command)
app.command("cancel")(slurm.cancel_command)
app.command("reconcile")(slurm.reconcile_command)
app.command("efficiency")(cluster.efficiency_command)
app.command("failures")(cluster.failures_command)
app.command("resubmit")(cluster.resubmit_command)
app.command("watch")(cluster.watch_command)


def main() -> None:
    """Entry point: user mistakes become one sentence on stderr and exit code 2, never a traceback."""
    from kdgat_core.commands.click_compat import click_exceptions

    try:
        # standalone_mode=False: the parser hands its usage errors here instead of printing a multi-line box
        code = app(standalone_mode=False)
        sys.exit(code if isinstance(code, int) else 0)
    except click_exceptions.NoArgsIsHelpError as exc:  # `kdgat` alone: its help, as before
        exc.show()
        sys.exit(exc.exit_code)
    except click_exceptions.UsageError as exc:  # a bad option value, a missing argument, an unknown option
        typer.echo(f"kdgat: {usage_sentence(exc)}", err=True)
        sys.exit(2)
    except (typer.Abort, getattr(click_exceptions, "Abort", typer.Abort)):  # Ctrl-C or end of input at a prompt
        typer.echo("kdgat: interrupted.", err=True)
        sys.exit(130)
    except click_exceptions.ClickException as exc:
        typer.echo(f"kdgat: {' '.join(exc.format_message().split())}", err=True)
        sys.exit(exc.exit_code)
    except KdgatError as exc:
        typer.echo(f"kdgat: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("kdgat: interrupted.", err=True)
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(0)


def usage_sentence(exc: Exception) -> str:
    """A parser's usage error as one line that names the command and where to look."""
    message = " ".join(exc.format_message().split()).replace("Value error, ", "")  # type: ignore[attr-defined]
    ctx = getattr(exc, "ctx", None)
    command = ctx.command_path if ctx is not None else "kdgat"
    return f"{message.rstrip('.')}. See `{command} --help`."


if __name__ == "__main__":
    main()

"""The `kdgat` command line: thin. Parses arguments, calls the layers, prints what they return.

Commands are top-level functions in `kdgat_core/commands/<area>.py`; the shared options live in
`kdgat_core/commands/options.py` and the output helpers in `kdgat_core/commands/output.py`. This module holds the app,
the one list that registers every command (`COMMANDS`), and the one place where a KdgatError becomes a sentence on
stderr. A command's module is imported only when that command runs: `kdgat leaderboard` loads the analytics commands
and nothing of training, SLURM or analysis (importing them and building their Typer commands cost ~50 ms of a 0.3 s
process). Heavy modules (torch, torch_geometric, mlflow) are imported inside the commands that need them, never here.
"""

from __future__ import annotations

import sys
from typing import Any, NamedTuple

import typer
import typer.main
from typer.core import TyperCommand, TyperGroup

from kdgat_core.commands.store import global_options
from kdgat_core.config import KdgatError


class Entry(NamedTuple):
    """One `kdgat` command: its name, the module and function that implement it, and its line in `kdgat --help`."""

    name: str
    module: str
    function: str
    help: str  # the first paragraph of the function's docstring, on one line (a test holds the two equal)


# Every command, in the order `kdgat --help` lists them: the one place a command is registered.
COMMANDS: tuple[Entry, ...] = (
    Entry("version", "kdgat_core.commands.store", "version_command", "Print kdgat's version."),
    Entry(
        "leaderboard",
        "kdgat_core.commands.analytics",
        "leaderboard_command",
        "The best runs by a final metric (val_loss, fpr, fnr and other losses sort ascending).",
    ),
    Entry(
        "compare",
        "kdgat_core.commands.analytics",
        "compare_command",
        "Runs' final metrics side by side, with the difference to the first and which run is best per metric.",
    ),
    Entry(
        "diff",
        "kdgat_core.commands.analytics",
        "diff_command",
        "The config params that differ between runs (one column per run).",
    ),
    Entry(
        "sweep",
        "kdgat_core.commands.analytics",
        "sweep_command",
        "Per value of a param: count, mean, std, min and max of a final metric.",
    ),
    Entry(
        "dataset",
        "kdgat_core.commands.analytics",
        "dataset_command",
        "A dataset's runs by stage, model size and KD: counts per status and the best run of each group.",
    ),
    Entry(
        "lineage",
        "kdgat_core.commands.analytics",
        "lineage_command",
        "Teacher -> student trees (from teacher_run_id tags) with each student's delta to its teacher, and retries "
        "(kdgat resubmit) under the runs they retry.",
    ),
    Entry(
        "runs",
        "kdgat_core.commands.analytics",
        "runs_command",
        "List runs (newest first), e.g. kdgat runs --status failed; kdgat runs --view kd-students.",
    ),
    Entry(
        "query",
        "kdgat_core.commands.analytics",
        "query_command",
        "Run SQL against the read-only views, e.g. kdgat query \"SELECT * FROM runs WHERE dataset = 'hcrl_sa'\".",
    ),
    Entry(
        "backup",
        "kdgat_core.commands.analytics",
        "backup_command",
        "A consistent copy of the tracking DB while writers are active (SQLite's online backup), integrity-checked.",
    ),
    Entry(
        "doctor",
        "kdgat_core.commands.analytics",
        "doctor_command",
        "Which stores are in force and why (the writers' tracking URI, the reader's), the backend and its server, "
        "whether the reader's connection is read-only, MLflow's schema version and row counts. Passwords are masked.",
    ),
    Entry(
        "migrate",
        "kdgat_core.commands.store",
        "migrate_command",
        "Move an MLflow SQLite store into PostgreSQL, every id kept: one transaction, then verified.",
    ),
    Entry(
        "group",
        "kdgat_core.commands.analysis",
        "group_command",
        "Runs grouped by params and tags: n, mean, std, median, min, max and a 95% CI of a metric per group.",
    ),
    Entry(
        "ab",
        "kdgat_core.commands.analysis",
        "ab_command",
        "Is the difference between two sides real? Bootstrap CI, Wilcoxon / paired t (or Mann-Whitney / Welch), "
        "effect.",
    ),
    Entry(
        "summary",
        "kdgat_core.commands.analysis",
        "summary_command",
        "One run's metric summaries from its history: last, min, max, the steps of min and max, the step count.",
    ),
    Entry(
        "importance",
        "kdgat_core.commands.analysis",
        "importance_command",
        "Which params move a metric: Spearman correlation and random-forest permutation importance per param.",
    ),
    Entry(
        "plot",
        "kdgat_core.commands.analysis",
        "plot_command",
        "Figures for papers (matplotlib): curves of runs or groups, or parallel coordinates of params.",
    ),
    Entry(
        "tag",
        "kdgat_core.commands.annotate",
        "tag_command",
        "Set tags on runs, e.g. kdgat tag RUN_A RUN_B --set verdict=baseline.",
    ),
    Entry(
        "note",
        "kdgat_core.commands.annotate",
        "note_command",
        "Write a note on runs (mlflow.note.content: MLflow's UI shows it as the description).",
    ),
    Entry(
        "delete",
        "kdgat_core.commands.annotate",
        "delete_command",
        "Delete runs (MLflow's soft delete: `kdgat restore` brings them back until `mlflow gc`).",
    ),
    Entry("restore", "kdgat_core.commands.annotate", "restore_command", "Restore deleted runs."),
    Entry(
        "ingest",
        "kdgat_core.commands.data",
        "ingest_command",
        "Convert raw CAN captures (can-train-and-test CSV, HCRL Car-Hacking, candump) to canonical parquet.",
    ),
    Entry(
        "datasets",
        "kdgat_core.commands.data",
        "datasets_command",
        "List the registered datasets with what is on disk: recordings, messages, attack share, distinct ids, span.",
    ),
    Entry(
        "graphs",
        "kdgat_core.commands.data",
        "graphs_command",
        "Build (or read from the cache) a dataset's window graphs and print counts per split and the time taken.",
    ),
    Entry(
        "synth",
        "kdgat_core.commands.data",
        "synth_command",
        "Write deterministic synthetic CAN traffic with DoS, fuzzing, spoofing and malfunction attacks.",
    ),
    Entry("run", "kdgat_core.commands.train", "run_command", "Train one pipeline stage as one tracked run."),
    Entry(
        "config-keys",
        "kdgat_core.commands.train",
        "config_keys_command",
        "List every config key that `kdgat run -O key=value` accepts, with its type and value.",
    ),
    Entry(
        "submit",
        "kdgat_core.commands.slurm",
        "submit_command",
        "Render a stage's sbatch script from slurm_templates/ and submit it (`sbatch --parsable`), or a whole "
        "pipeline.",
    ),
    Entry(
        "jobs",
        "kdgat_core.commands.slurm",
        "jobs_command",
        "The queue and recent history (one squeue + one sacct call) joined with the runs; lost runs flagged.",
    ),
    Entry(
        "logs",
        "kdgat_core.commands.slurm",
        "logs_command",
        "Print a job's stdout and stderr (`slurm-<id>.out/.err` in its run folder).",
    ),
    Entry(
        "cancel",
        "kdgat_core.commands.slurm",
        "cancel_command",
        "Cancel jobs (scancel); a running job's run ends KILLED. Asks first on a terminal.",
    ),
    Entry(
        "reconcile",
        "kdgat_core.commands.slurm",
        "reconcile_command",
        "Mark lost runs (tagged running, but their job has ended or their process is gone) as failed, through MLflow.",
    ),
    Entry(
        "efficiency",
        "kdgat_core.commands.cluster",
        "efficiency_command",
        "What jobs used of what they asked for (sacct), with seff-style advice per stage and preset.",
    ),
    Entry(
        "failures",
        "kdgat_core.commands.cluster",
        "failures_command",
        "Failed and lost runs (and jobs that failed before opening a run) grouped by cause.",
    ),
    Entry(
        "resubmit",
        "kdgat_core.commands.cluster",
        "resubmit_command",
        "Resubmit failed runs: same stage, preset, dataset, overrides and template; more memory after an out-of-"
        "memory kill, more time after a time limit; an array only for its failed tasks. The new run is tagged "
        "retry_of.",
    ),
    Entry(
        "watch",
        "kdgat_core.commands.cluster",
        "watch_command",
        "Alert on job and run events (rules and sinks in kdgat.toml \\[watch]): a terminal line and the bell, tmux, a "
        "command, a webhook. Survives a locked tracking DB and a silent scheduler; never alerts twice for one event.",
    ),
)


class LazyGroup(TyperGroup):
    """The `kdgat` group: a command's module is imported when the command is looked up to run (or to show its own
    `--help`); `kdgat --help`, `kdgat` alone and an unknown command's "did you mean" read `COMMANDS` and import none."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        self.listing = False  # True while this group's own help is written: commands stay unloaded
        for entry in COMMANDS:
            self.commands.setdefault(entry.name, Listed(entry))

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        command = self.commands.get(cmd_name)
        if isinstance(command, Listed) and not self.listing:
            command = self.commands[cmd_name] = command.load(self.rich_markup_mode)
        return command

    def format_help(self, ctx: Any, formatter: Any) -> None:
        self.listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self.listing = False


class Listed(TyperCommand):
    """A registered command not yet imported: its name and help line, enough for `kdgat --help`."""

    def __init__(self, entry: Entry) -> None:
        super().__init__(entry.name, help=entry.help, short_help=entry.help)
        self.entry = entry

    def load(self, rich_markup_mode: Any) -> Any:
        """The command itself, built by Typer from the function's signature as `app.command()` would."""
        # __import__, the import statement's path: `python -X importtime` reports it (importlib.import_module it misses)
        function = getattr(__import__(self.entry.module, fromlist=[self.entry.function]), self.entry.function)
        one = typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=rich_markup_mode)
        one.command(self.entry.name)(function)
        return typer.main.get_command(one)


app = typer.Typer(
    name="kdgat",
    help="kdgat: CAN intrusion-detection experiments on GNNs - data, training, tracking, analytics, SLURM.",
    cls=LazyGroup,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
app.callback()(global_options)


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
    message = message if message.endswith("?") else f"{message.rstrip('.')}."  # "Did you mean 'x'?" keeps its "?"
    return f"{message} See `{command} --help`."


if __name__ == "__main__":
    main()

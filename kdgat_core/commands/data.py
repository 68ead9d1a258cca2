"""`kdgat` commands for the data area. Registered in kdgat_core.cli; heavy imports stay inside functions.

ingest   raw captures -> canonical parquet          datasets  what each dataset has on disk
graphs   build / inspect the window-graph cache     synth     write synthetic traffic (parquet or a raw format)
"""

from __future__ import annotations

import time
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from kdgat_core.commands.output import OutputFormat, emit

DataRootOpt = Annotated[
    Optional[str],
    typer.Option(
        "--data-root", help="Folder holding one folder per dataset (else KDGAT_DATA_ROOT, kdgat.toml [data] root)."
    ),
]


class CaptureFormat(str, Enum):
    auto = "auto"
    csv = "csv"
    hcrl = "hcrl"
    candump = "candump"


class SynthFormat(str, Enum):
    parquet = "parquet"
    csv = "csv"
    hcrl = "hcrl"
    candump = "candump"


def ingest_command(
    dataset: Annotated[str, typer.Argument(help="Dataset name (built in, or registered in kdgat.toml).")],
    raw: Annotated[Path, typer.Option("--raw", help="Folder of raw captures: <split folder>/<recording>.csv|txt|log.")],
    out: Annotated[
        Optional[Path], typer.Option("--out", help="Dataset root to write into (else the data root).")
    ] = None,
    data_root: DataRootOpt = None,
    split: Annotated[
        Optional[str], typer.Option("--split", help="Put every capture in this split instead of using folder names.")
    ] = None,
    fmt: Annotated[
        CaptureFormat, typer.Option("--format", help="Capture format; auto detects it from the first line.")
    ] = CaptureFormat.auto,
    label: Annotated[
        int,
        typer.Option("--label", help="Label for unlabelled candump frames without a .labels file: 0 normal, 1 attack."),
    ] = 0,
    strict: Annotated[
        bool, typer.Option("--strict", help="Stop at the first malformed line instead of skipping it.")
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="Rewrite outputs even when they are up to date.")] = False,
) -> None:
    """Convert raw CAN captures (can-train-and-test CSV, HCRL Car-Hacking, candump) to canonical parquet."""
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    from kdgat_core.data.ingest import ingest, total_bytes

    root = out or (Path(data_root) if data_root else None)
    err = Console(stderr=True)
    t0 = time.perf_counter()
    with Progress(
        TextColumn("ingest {task.description}"),
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    ) as progress:
        task = progress.add_task(dataset, total=total_bytes(raw))
        results = ingest(
            dataset,
            raw,
            root,
            split=split,
            fmt=fmt.value,
            label=label,
            strict=strict,
            force=force,
            advance=lambda n: progress.advance(task, n),
        )
    rows = [
        {
            "source": r.source,
            "split": r.split,
            "recording": r.recording,
            "format": r.format,
            "messages": r.messages,
            "attacks": r.attacks,
            "skipped_lines": r.skipped,
            "status": r.status,
        }
        for r in results
    ]
    emit(rows, OutputFormat.table)
    for r in results:
        for problem in r.problems:
            typer.echo(f"skipped {problem}", err=True)
        if r.skipped > len(r.problems):
            typer.echo(f"skipped {r.skipped - len(r.problems)} more malformed lines in {r.source}", err=True)
    skipped = sum(r.skipped for r in results)
    out_dir = results[0].output.parent
    typer.echo(
        f"{sum(r.messages for r in results):,} messages from {len(results)} captures -> {out_dir}"
        f" ({skipped} malformed lines skipped, {time.perf_counter() - t0:.1f} s)",
        err=True,
    )


def datasets_command(
    name: Annotated[Optional[str], typer.Argument(help="Only this dataset.")] = None,
    data_root: DataRootOpt = None,
    fmt: Annotated[
        Optional[str], typer.Option("--format", "-f", help="table | csv | json | markdown | latex")
    ] = "table",
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write the output to this file.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite the --output file if it exists.")] = False,
) -> None:
    """List the registered datasets with what is on disk: recordings, messages, attack share, distinct ids, span."""
    from kdgat_core.config import KdgatError, resolve_data_root
    from kdgat_core.data.catalog import catalog

    try:
        out_fmt = OutputFormat(fmt)
    except ValueError:
        raise KdgatError(
            f"Unknown format '{fmt}'; choose one of: {', '.join(f.value for f in OutputFormat)}."
        ) from None
    rows = catalog(data_root, only=name)
    if out_fmt is OutputFormat.table:
        for r in rows:
            r["attack_share"] = "" if r["attack_share"] is None else f"{100 * r['attack_share']:.2f}%"
            r["span_s"] = f"{r['span_s']:,.0f}"
            r["messages"] = f"{r['messages']:,}"
    emit(rows, out_fmt, output, title=f"datasets under {resolve_data_root(data_root).value}")


def graphs_command(
    dataset: Annotated[str, typer.Argument(help="Dataset name.")],
    window: Annotated[int, typer.Option("--window", "-w", help="Messages per window graph.")] = 100,
    stride: Annotated[
        Optional[int], typer.Option("--stride", "-s", help="Messages between window starts (default: the window).")
    ] = None,
    max_messages: Annotated[
        int, typer.Option("--max-messages", help="Keep only the first N messages of each recording (0 = all).")
    ] = 0,
    val_fraction: Annotated[
        float, typer.Option("--val-fraction", help="Temporal tail of each training recording kept for validation.")
    ] = 0.2,
    data_root: DataRootOpt = None,
    cache_dir: Annotated[
        Optional[Path],
        typer.Option("--cache-dir", help="Graph cache folder (else KDGAT_CACHE_DIR, kdgat.toml, ~/.cache/kdgat)."),
    ] = None,
    rebuild: Annotated[bool, typer.Option("--rebuild", help="Rebuild even when a valid cache exists.")] = False,
    fmt: Annotated[
        Optional[str], typer.Option("--format", "-f", help="table | csv | json | markdown | latex")
    ] = "table",
) -> None:
    """Build (or read from the cache) a dataset's window graphs and print counts per split and the time taken."""
    from kdgat_core.config import KdgatError, PipelineConfig
    from kdgat_core.data.catalog import dataset_dir, validate_data_config

    try:
        out_fmt = OutputFormat(fmt)
    except ValueError:
        raise KdgatError(
            f"Unknown format '{fmt}'; choose one of: {', '.join(f.value for f in OutputFormat)}."
        ) from None
    cfg = PipelineConfig(dataset=dataset)
    cfg.data.window = window
    cfg.data.stride = stride if stride is not None else window
    cfg.data.max_messages = max_messages
    cfg.data.val_fraction = val_fraction
    validate_data_config(cfg)
    dataset_dir(dataset, data_root)  # both before load_graphs imports torch: a typo fails in a blink
    from kdgat_core.data.graph_cache import load_graphs

    t0 = time.perf_counter()
    g = load_graphs(
        cfg, data_root=data_root, cache_dir=cache_dir, rebuild=rebuild, progress=lambda msg: typer.echo(msg, err=True)
    )
    total = time.perf_counter() - t0
    parts = [("train", g.train), ("val", g.val), *g.test.items()]
    rows = []
    for name, gs in parts:
        secs = g.build_seconds.get("train" if name == "val" else name, 0.0)
        rows.append(
            {
                "split": name,
                "recordings": len(set(gs.recording_index.tolist())),
                "graphs": len(gs),
                "attack_graphs": int(gs.y.sum()),
                "nodes": gs.num_nodes,
                "edges": gs.num_edges,
                "source": "built" if secs > 0 else "cache",
                "build_s": round(secs, 3),
            }
        )
    emit(
        rows,
        out_fmt,
        title=f"{dataset}: window {cfg.data.window}, stride {cfg.data.stride}, vocabulary {g.num_ids} "
        f"(incl. OOV), {g.node_feature_dim} node / {g.edge_feature_dim} edge features",
    )
    for dup, kept in g.duplicates.items():
        typer.echo(f"{dup} is identical to {kept}: used once", err=True)
    typer.echo(f"{sum(len(gs) for _, gs in parts):,} graphs in {total:.2f} s", err=True)


def synth_command(
    out: Annotated[Path, typer.Argument(help="Folder to write into.")],
    fmt: Annotated[
        SynthFormat,
        typer.Option(
            "--format", help="parquet: a dataset root (<out>/<name>/...); or a raw capture format for ingest."
        ),
    ] = SynthFormat.parquet,
    name: Annotated[str, typer.Option("--name", help="Dataset folder name (parquet only).")] = "synthetic",
    seed: Annotated[int, typer.Option("--seed", help="Same seed, same bytes.")] = 0,
    scale: Annotated[
        float, typer.Option("--scale", help="Recording length multiplier (1 = about 42k messages in all).")
    ] = 1.0,
) -> None:
    """Write deterministic synthetic CAN traffic with DoS, fuzzing, spoofing and malfunction attacks."""
    from kdgat_core.data.synthetic import write_dataset, write_raw_dataset

    t0 = time.perf_counter()
    if fmt is SynthFormat.parquet:
        folder = write_dataset(out, name=name, seed=seed, scale=scale)
        hint = f"use it with --data-root {out} (dataset '{name}')"
    else:
        folder = write_raw_dataset(out, fmt.value, seed=seed, scale=scale)
        hint = f"ingest it with: kdgat ingest synthetic --raw {out} --out ROOT"
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    typer.echo(f"wrote {len(files)} files to {folder} in {time.perf_counter() - t0:.1f} s; {hint}")

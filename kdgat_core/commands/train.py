"""`kdgat run <stage>` (train one stage as one tracked run) and `kdgat config-keys`. Torch and MLflow load lazily."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from kdgat_core.commands.options import FormatOpt, TrackingUriOpt
from kdgat_core.commands.output import OutputFormat, emit

if TYPE_CHECKING:
    from kdgat_core.config import PipelineConfig


def run_command(
    stage: Annotated[str, typer.Argument(help="autoencoder | curriculum | fusion | evaluation", show_default=False)],
    preset_name: Annotated[
        str, typer.Option("--preset", "-p", help="<arch>,<size>[,variant], e.g. vgae,teacher or gat,student,cpu.")
    ],
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="Dataset name (see `kdgat datasets`).")],
    kd: Annotated[bool, typer.Option("--kd", help="Distil a student from a teacher run.")] = False,
    teacher: Annotated[
        Optional[str],
        typer.Option("--teacher", help="Teacher run id for --kd ('auto' or omitted: the newest complete teacher run)."),
    ] = None,
    override: Annotated[
        Optional[list[str]],
        typer.Option("--override", "-O", help="key=value config override (repeatable); see `kdgat config-keys`."),
    ] = None,
    device: Annotated[
        Optional[str], typer.Option("--device", help="cpu or cuda (default: the config's train.device).")
    ] = None,
    tracking_uri: TrackingUriOpt = None,
    data_root: Annotated[
        Optional[str],
        typer.Option(
            "--data-root", help="Folder holding <dataset>/ (else KDGAT_DATA_ROOT, kdgat.toml, ../shared/data)."
        ),
    ] = None,
    fmt: FormatOpt = OutputFormat.table,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No per-epoch progress on stderr.")] = False,
) -> None:
    """Train one pipeline stage as one tracked run.

    STAGE is autoencoder, curriculum, fusion or evaluation; --preset is <arch>,<size>[,variant] with arch vgae
    (autoencoder), gat (curriculum), dqn (fusion) or eval (evaluation), size teacher or student, variant tiny or cpu.
    Example: kdgat run autoencoder --preset vgae,teacher --dataset hcrl_sa
    """
    from kdgat_core.config import resolve_tracking_uri

    cfg = build_run_config(stage, preset_name, dataset, kd, teacher, override or [], device)
    if not quiet:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    from kdgat_core.stages import run_stage

    uri = resolve_tracking_uri(tracking_uri).value
    result = run_stage(cfg, tracking_uri=uri, data_root=data_root)  # resolved below: errors name its source
    rows: list[dict[str, object]] = [
        {"metric": "run_id", "value": result.run_id},
        {"metric": "run_name", "value": cfg.run_name},
    ]
    metrics = list(result.metrics.items())
    if fmt is OutputFormat.table:
        # a terminal gets the headline metrics and each scenario's F1; every metric: --format json, `kdgat compare`
        shown = [(k, v) for k, v in metrics if "/" not in k or k.endswith("/f1")]
        rows += [{"metric": k, "value": v} for k, v in shown]
        if len(shown) < len(metrics):
            rows.append(
                {"metric": f"(+{len(metrics) - len(shown)} more: --format json, or kdgat compare)", "value": ""}
            )
    else:
        rows += [{"metric": k, "value": v} for k, v in metrics]
    emit(rows, fmt, title=f"{cfg.run_name} ({result.run_id})" if fmt is OutputFormat.table else None)


def config_keys_command(
    preset_name: Annotated[
        Optional[str],
        typer.Option("--preset", "-p", help="Show this preset's values (default: the built-in defaults)."),
    ] = None,
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="Dataset the preset is for.")] = "hcrl_sa",
    fmt: FormatOpt = OutputFormat.table,
) -> None:
    """List every config key that `kdgat run -O key=value` accepts, with its type and value."""
    from kdgat_core.config import PipelineConfig, preset

    cfg = preset(preset_name, dataset=dataset) if preset_name else PipelineConfig(dataset=dataset)
    rows = [
        {"key": k, "type": type(v).__name__, "value": ",".join(map(str, v)) if isinstance(v, list) else v}
        for k, v in cfg.flatten().items()
        if k not in ("dataset", "stage", "model_size")
    ]
    emit(rows, fmt)


def build_run_config(
    stage: str, preset_name: str, dataset: str, kd: bool, teacher: str | None, overrides: list[str], device: str | None
) -> PipelineConfig:
    """The PipelineConfig of a `kdgat run` command line; every mistake is a KdgatError sentence (no run started)."""
    from kdgat_core.config import ARCH_STAGE, KdgatError, Stage, dataset_spec, preset

    wanted = Stage.parse(stage, "stage")
    dataset_spec(dataset)
    cfg = preset(preset_name, dataset=dataset)
    if cfg.stage != wanted.value:
        arch = next(a for a, s in ARCH_STAGE.items() if s == wanted)
        raise KdgatError(
            f"Preset '{preset_name}' is for the {cfg.stage} stage, not {wanted}; use --preset {arch},{cfg.model_size}."
        )
    cfg.override(overrides)
    if teacher and not kd:
        raise KdgatError("--teacher only makes sense with --kd.")
    if kd:
        cfg.kd.enabled = True
        cfg.kd.teacher_run_id = teacher or cfg.kd.teacher_run_id
    if device:
        cfg.train.device = device
    return cfg

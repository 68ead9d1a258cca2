"""Earlier runs a stage builds on: finding them in the tracking DB, checking them, loading their models."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import torch

from kdgat_core.config import STAGE_ARCH, TEACHER_AUTO, Arch, KdgatError, ModelSize, PipelineConfig, Stage
from kdgat_core.models import CANGraphGAT, CANGraphVGAE, QNetwork
from kdgat_core.stages.training_loop import CHECKPOINT_FILE, load_checkpoint

MODEL_CLASSES: dict[str, type[torch.nn.Module]] = {
    Arch.VGAE.value: CANGraphVGAE,
    Arch.GAT.value: CANGraphGAT,
    Arch.DQN.value: QNetwork,
}
ModelT = TypeVar("ModelT", bound=torch.nn.Module)


def vgae_kwargs(cfg: PipelineConfig, graphs: Any) -> dict[str, Any]:
    v = cfg.vgae
    return dict(
        num_ids=graphs.num_ids,
        node_feature_dim=graphs.node_feature_dim,
        edge_feature_dim=graphs.edge_feature_dim,
        hidden_dims=list(v.hidden_dims),
        latent_dim=v.latent_dim,
        heads=v.heads,
        embedding_dim=v.embedding_dim,
        dropout=v.dropout,
        feature_weight=v.feature_weight,
        id_weight=v.id_weight,
        edge_weight=v.edge_weight,
        kl_weight=v.kl_weight,
    )


def gat_kwargs(cfg: PipelineConfig, graphs: Any) -> dict[str, Any]:
    g = cfg.gat
    return dict(
        num_ids=graphs.num_ids,
        node_feature_dim=graphs.node_feature_dim,
        edge_feature_dim=graphs.edge_feature_dim,
        hidden=g.hidden,
        layers=g.layers,
        heads=g.heads,
        embedding_dim=g.embedding_dim,
        dropout=g.dropout,
        jk=g.jk,
        pooling=g.pooling,
        id_mask=g.id_mask,
    )


def checkpoint_payload(arch: str, kwargs: dict, model: torch.nn.Module, meta: dict | None = None) -> dict:
    """What best.pt holds: enough to rebuild the model without the run's config (weights_only-loadable)."""
    return {"arch": arch, "kwargs": kwargs, "state_dict": model.state_dict(), "meta": meta or {}}


def resolve_prerequisite(cfg: PipelineConfig, stage: Stage, tracking_uri: str | None) -> str:
    """The run id of an earlier stage: named with -O train.<stage>_run_id=..., else the newest complete one."""
    from kdgat_core.tracking import find_run, load_run_config

    explicit = getattr(cfg.train, f"{stage}_run_id")
    if explicit:
        other = load_run_config(explicit, tracking_uri)
        if other.stage != stage.value or other.dataset != cfg.dataset:
            raise KdgatError(
                f"Run {explicit} is a {other.stage} run on {other.dataset}, but train.{stage}_run_id "
                f"needs a {stage} run on {cfg.dataset}."
            )
        return explicit
    found = find_run(cfg.dataset, stage, cfg.model_size, use_kd=cfg.kd.enabled, tracking_uri=tracking_uri)
    if found is None and cfg.kd.enabled:
        found = find_run(cfg.dataset, stage, cfg.model_size, use_kd=False, tracking_uri=tracking_uri)
    if found is None:
        arch = STAGE_ARCH[stage]
        raise KdgatError(
            f"The {cfg.stage} stage needs a complete {stage} run of {cfg.dataset} at {cfg.model_size} size and there "
            f"is none; run `kdgat run {stage} --preset {arch},{cfg.model_size} --dataset {cfg.dataset}` first "
            f"or name one with -O train.{stage}_run_id=RUN."
        )
    return found


def resolve_teacher(cfg: PipelineConfig, tracking_uri: str | None) -> str:
    """The teacher run of a KD run: --teacher RUN, else (empty or `auto`) the newest complete teacher-size run of the same stage."""
    from kdgat_core.tracking import find_run

    if cfg.kd.teacher_run_id and cfg.kd.teacher_run_id != TEACHER_AUTO:
        return cfg.kd.teacher_run_id
    found = find_run(cfg.dataset, cfg.stage, ModelSize.TEACHER, use_kd=False, tracking_uri=tracking_uri)
    if found is None:
        raise KdgatError(
            f"Knowledge distillation needs a teacher: there is no complete teacher {cfg.stage} run of {cfg.dataset}; "
            f"train one (`kdgat run {cfg.stage} --preset {cfg.arch},teacher --dataset {cfg.dataset}`) or pass --teacher RUN."
        )
    return found


def check_teacher(cfg: PipelineConfig, tracking_uri: str | None) -> PipelineConfig:
    """The teacher's config, after checking it is a teacher of the same stage (architecture) and dataset."""
    from kdgat_core.tracking import load_run_config

    run_id = cfg.kd.teacher_run_id
    teacher = load_run_config(run_id, tracking_uri)
    if teacher.dataset != cfg.dataset:
        raise KdgatError(
            f"Teacher run {run_id} was trained on {teacher.dataset}, not {cfg.dataset}; "
            f"a student learns only from a teacher of its own dataset."
        )
    if teacher.stage != cfg.stage:
        raise KdgatError(
            f"Teacher run {run_id} is a {teacher.stage} ({teacher.arch}) run; a {cfg.stage} student "
            f"needs a {cfg.stage} ({cfg.arch}) teacher."
        )
    if teacher.kd.enabled:
        raise KdgatError(f"Teacher run {run_id} is itself a distilled run; pick a run trained without --kd.")
    return teacher


def load_run_model(
    run_id: str,
    tracking_uri: str | None,
    model_class: type[ModelT],
    graphs: Any = None,
    device: torch.device | str = "cpu",
) -> tuple[ModelT, dict]:
    """The frozen-ready model of a run (eval mode) and its checkpoint meta; checks it matches the data's vocabulary."""
    arch = next(a for a, cls in MODEL_CLASSES.items() if cls is model_class)
    from kdgat_core.tracking import run_artifact_dir

    path = Path(run_artifact_dir(run_id, tracking_uri)) / CHECKPOINT_FILE
    payload = load_checkpoint(path, run_id)
    if payload.get("arch") != arch:
        raise KdgatError(f"Run {run_id} holds a {payload.get('arch')} checkpoint, not the {arch} this stage needs.")
    kwargs = dict(payload["kwargs"])
    if graphs is not None and "num_ids" in kwargs and kwargs["num_ids"] != graphs.num_ids:
        raise KdgatError(
            f"Run {run_id} was trained on a vocabulary of {kwargs['num_ids']} CAN ids but the data now "
            f"has {graphs.num_ids}; re-run that stage on the current data."
        )
    try:
        model = model_class(**kwargs)
        model.load_state_dict(payload["state_dict"])
    except (RuntimeError, TypeError, KeyError) as exc:
        raise KdgatError(
            f"Checkpoint {path} of run {run_id} does not fit its model ({type(exc).__name__}); re-run that stage."
        ) from None
    return model.to(device).eval(), dict(payload.get("meta") or {})

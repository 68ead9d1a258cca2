"""`run_stage(cfg)`: one stage, one tracked run. Checks what can be checked before the run starts; anything that
goes wrong after it started marks the run failed (tracking's open_run) and reaches the user as one sentence."""

from __future__ import annotations

from dataclasses import dataclass

from kdgat_core.config import KdgatError, ModelSize, PipelineConfig, Stage, dataset_spec, validate_config


@dataclass
class StageResult:
    run_id: str
    metrics: dict[str, float]


# The earlier runs each stage's body looks up (it finds the rest through their tags)
RESOLVES: dict[Stage, tuple[Stage, ...]] = {
    Stage.AUTOENCODER: (),
    Stage.CURRICULUM: (Stage.AUTOENCODER,),
    Stage.FUSION: (Stage.AUTOENCODER, Stage.CURRICULUM),
    Stage.EVALUATION: (Stage.FUSION,),
}


def check_before_run(cfg: PipelineConfig, tracking_uri: str | None = None, data_root: str | None = None) -> None:
    """What can be checked without torch or a run: the dataset, every config value, the data folder, the store."""
    from kdgat_core.data.catalog import dataset_dir, validate_data_config

    dataset_spec(cfg.dataset)
    validate_config(cfg)
    validate_data_config(cfg)
    dataset_dir(cfg.dataset, data_root)
    from kdgat_core.tracking.store import check_reachable, normalize_uri

    check_reachable(*normalize_uri(tracking_uri))


def run_stage(cfg: PipelineConfig, tracking_uri: str | None = None, data_root: str | None = None) -> StageResult:
    from kdgat_core.data import load_graphs
    from kdgat_core.stages.autoencoder import run_autoencoder
    from kdgat_core.stages.curriculum import run_curriculum
    from kdgat_core.stages.evaluation import run_evaluation
    from kdgat_core.stages.fusion import run_fusion
    from kdgat_core.stages.prerequisites import resolve_prerequisite, resolve_teacher
    from kdgat_core.stages.training_loop import CHECKPOINT_FILE, resolve_device, set_threads
    from kdgat_core.tracking import open_run

    stage = Stage.parse(cfg.stage, "stage")
    ModelSize.parse(cfg.model_size, "model size")
    check_before_run(cfg, tracking_uri, data_root)
    device = resolve_device(cfg.train.device)
    set_threads(cfg.train.threads)
    if cfg.kd.enabled and cfg.model_size != ModelSize.STUDENT.value:
        raise KdgatError("Knowledge distillation trains a student: use --preset <arch>,student with --kd.")
    if cfg.kd.enabled:
        cfg.kd.teacher_run_id = resolve_teacher(cfg, tracking_uri)
    body = {
        Stage.AUTOENCODER: run_autoencoder,
        Stage.CURRICULUM: run_curriculum,
        Stage.FUSION: run_fusion,
        Stage.EVALUATION: run_evaluation,
    }[stage]
    if cfg.kd.enabled:
        from kdgat_core.stages.prerequisites import check_teacher

        check_teacher(cfg, tracking_uri)
    for needed in RESOLVES[stage]:  # a missing parent run is a sentence now, not a FAILED run later
        resolve_prerequisite(cfg, needed, tracking_uri)
    # the graphs are built (or read from the cache) before the run opens: a data mistake records no run
    graphs = load_graphs(cfg, data_root=data_root)
    if len(graphs.val) == 0:
        raise KdgatError(
            f"Dataset {cfg.dataset} gives no validation graphs with data.window={cfg.data.window} and "
            f"data.val_fraction={cfg.data.val_fraction}; raise data.val_fraction or data.max_messages, or lower "
            "data.window."
        )
    with open_run(cfg, tracking_uri) as run:
        metrics = body(cfg, run, graphs, device, tracking_uri)
        best = run.artifact_dir / CHECKPOINT_FILE
        if best.is_file():  # written in place during training; now also registered with MLflow
            run.log_artifact(best)
        return StageResult(run.run_id, metrics)

"""`run_stage(cfg)`: one stage, one tracked run. Checks what can be checked before the run starts; anything that
goes wrong after it started marks the run failed (tracking's open_run) and reaches the user as one sentence."""

from __future__ import annotations

from dataclasses import dataclass

from kdgat_core.config import KdgatError, ModelSize, PipelineConfig, Stage, dataset_spec


@dataclass
class StageResult:
    run_id: str
    metrics: dict[str, float]


def run_stage(cfg: PipelineConfig, tracking_uri: str | None = None, data_root: str | None = None) -> StageResult:
    from kdgat_core.data import load_graphs
    from kdgat_core.stages.autoencoder import run_autoencoder
    from kdgat_core.stages.curriculum import run_curriculum
    from kdgat_core.stages.evaluation import run_evaluation
    from kdgat_core.stages.fusion import run_fusion
    from kdgat_core.stages.prerequisites import resolve_teacher
    from kdgat_core.stages.training_loop import CHECKPOINT_FILE, resolve_device, set_threads
    from kdgat_core.tracking import open_run

    stage = Stage.parse(cfg.stage, "stage")
    ModelSize.parse(cfg.model_size, "model size")
    dataset_spec(cfg.dataset)
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
    with open_run(cfg, tracking_uri) as run:
        if cfg.kd.enabled:
            from kdgat_core.stages.prerequisites import check_teacher

            check_teacher(cfg, tracking_uri)
        graphs = load_graphs(cfg, data_root=data_root)
        metrics = body(cfg, run, graphs, device, tracking_uri)
        best = run.artifact_dir / CHECKPOINT_FILE
        if best.is_file():  # written in place during training; now also registered with MLflow
            run.log_artifact(best)
        return StageResult(run.run_id, metrics)

"""Stage 1, autoencoder: a VGAE trained on normal windows; its reconstruction error is the anomaly score.

The score threshold (Youden's J) and a Platt calibration into an attack probability are chosen on validation and
stored with the checkpoint, so fusion and evaluation use exactly what this run chose.
"""

from __future__ import annotations

from typing import Any

import torch

from kdgat_core.config import Arch, Metric, PipelineConfig
from kdgat_core.models import CANGraphVGAE, count_parameters
from kdgat_core.stages import plots
from kdgat_core.stages.distillation import LatentProjection, freeze, vgae_kd_loss
from kdgat_core.stages.metrics import classification_metrics, headline
from kdgat_core.stages.prerequisites import checkpoint_payload, load_run_model, vgae_kwargs
from kdgat_core.stages.scoring import VGAECalibration, VGAEScores, anomaly_scores, check_score_norm, vgae_scores
from kdgat_core.stages.training_loop import CHECKPOINT_FILE, EpochReport, fit, save_checkpoint, seed_everything

GRAD_CLIP = 5.0


def run_autoencoder(
    cfg: PipelineConfig, run: Any, graphs: Any, device: torch.device, tracking_uri: str | None
) -> dict[str, float]:
    check_score_norm(cfg.vgae.score_norm)
    gen = seed_everything(cfg.train.seed)
    kwargs = vgae_kwargs(cfg, graphs)
    model = CANGraphVGAE(**kwargs).to(device)
    extra_modules: tuple[torch.nn.Module, ...] = ()
    teacher: CANGraphVGAE | None = None
    projection: LatentProjection | None = None
    final: dict[str, float] = {Metric.NUM_PARAMETERS.value: count_parameters(model)}
    if cfg.kd.enabled:
        teacher, _ = load_run_model(cfg.kd.teacher_run_id, tracking_uri, CANGraphVGAE, graphs, device)
        freeze(teacher)
        projection = LatentProjection(cfg.vgae.latent_dim, teacher.latent_dim).to(device)
        extra_modules = (projection,)
        final[Metric.TEACHER_NUM_PARAMETERS.value] = count_parameters(teacher)
    params = [p for m in (model, *extra_modules) for p in m.parameters()]
    optimizer = torch.optim.Adam(params, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)

    train_normals = torch.nonzero(graphs.train.y == 0).flatten()
    val_y = graphs.val.y.numpy()

    def run_epoch(epoch: int) -> float:
        model.train()
        total, count = 0.0, 0
        for batch in graphs.train.batches(cfg.train.batch_size, shuffle=True, generator=gen, indices=train_normals):
            batch = batch.to(device)
            out = model(batch)
            loss = model.loss(batch, out)
            if teacher is not None and projection is not None:
                with torch.no_grad():
                    t_out = teacher(batch)
                loss = vgae_kd_loss(out, t_out, projection, loss, alpha=cfg.kd.alpha)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, GRAD_CLIP)
            optimizer.step()
            total += loss.item() * batch.num_graphs
            count += batch.num_graphs
        return total / max(count, 1)

    norm = cfg.vgae.score_norm

    def val_scores() -> VGAEScores:
        return anomaly_scores(model, graphs.val, device, norm, cfg.data.window, related=(graphs.train,))

    def validate() -> EpochReport:
        # the checkpoint monitor: the raw reconstruction error of normal windows (the training objective's own scale)
        raw = vgae_scores(model, graphs.val, device).score
        normal = raw[val_y == 0]
        val_loss = float(normal.mean()) if len(normal) else float(raw.mean())
        score = val_scores().score if norm != "none" else raw
        cal = VGAECalibration.fit(val_y, score, norm)
        m = classification_metrics(val_y, score >= cal.threshold, score)
        return EpochReport(val_loss, val_loss, m[Metric.F1.value], {Metric.VAL_AUC.value: m[Metric.AUC.value]})

    result = fit(
        model,
        optimizer,
        cfg.train,
        run_epoch,
        validate,
        run,
        monitor=Metric.VAL_LOSS.value,
        checkpoint=lambda: checkpoint_payload(Arch.VGAE.value, kwargs, model),
        modules=extra_modules,
    )

    s = val_scores()
    cal = VGAECalibration.fit(val_y, s.score, norm)
    pred = s.score >= cal.threshold
    m = classification_metrics(val_y, pred, s.score)
    save_checkpoint(
        run.artifact_dir / CHECKPOINT_FILE,
        checkpoint_payload(Arch.VGAE.value, kwargs, model, {"calibration": cal.to_dict()}),
    )
    final.update(headline(m))
    final.update(
        {
            Metric.VAL_LOSS.value: result.best.val_loss,
            Metric.THRESHOLD.value: cal.threshold,
            Metric.TRAIN_SECONDS.value: result.seconds,
        }
    )
    run.log_final(final)
    run.log_json(
        "metrics.json",
        {
            "final": final,
            "validation": m,
            "calibration": cal.to_dict(),
            "best_epoch": result.best_epoch,
            "epochs_run": result.epochs_run,
            "stopped_early": result.stopped_early,
            "history": result.history,
        },
    )
    title = f"{cfg.run_name}: validation reconstruction error"
    for name, fig in (
        ("val_scores.png", plots.score_histogram_figure(val_y, s.score, cal.threshold, title)),
        ("val_confusion.png", plots.confusion_matrix_figure(val_y, pred, cfg.run_name)),
    ):
        run.log_figure(name, fig)
        plots.close(fig)
    return final


__all__ = ["run_autoencoder"]

"""Stage 2, curriculum: a GAT classifier trained with a curriculum that advances every epoch.

Normal windows are ranked easy -> hard by the trained VGAE's anomaly score; epoch 0 trains on every attack window and
the easiest normals at `gat.curriculum_start_ratio` normals per attack; each epoch adds harder normals until, after
`gat.curriculum_ramp` of the epochs, every normal window is in (the natural ratio).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from kdgat_core.config import Arch, Metric, PipelineConfig, Stage, prerequisite_tag
from kdgat_core.models import CANGraphGAT, CANGraphVGAE, count_parameters
from kdgat_core.models.gat import mask_window_ids
from kdgat_core.stages import plots
from kdgat_core.stages.distillation import freeze, gat_kd_loss
from kdgat_core.stages.metrics import classification_metrics, headline
from kdgat_core.stages.prerequisites import checkpoint_payload, gat_kwargs, load_run_model, resolve_prerequisite
from kdgat_core.stages.scoring import attack_probability, check_inference_ids, gat_logits, vgae_scores
from kdgat_core.stages.training_loop import EpochReport, fit, seed_everything

GRAD_CLIP = 5.0
DECISION_THRESHOLD = 0.5


def curriculum_normals(n_normal: int, n_attack: int, epoch: int, epochs: int, start_ratio: float, ramp: float) -> int:
    """How many of the easiest normal windows epoch `epoch` trains on (grows every epoch until all are in)."""
    if n_attack == 0 or n_normal == 0:
        return n_normal
    natural = n_normal / n_attack
    start = min(start_ratio, natural)
    ramp_epochs = max(1, round(ramp * max(epochs - 1, 1)))
    frac = min(1.0, epoch / ramp_epochs)
    ratio = start + (natural - start) * frac
    return int(min(n_normal, max(1, round(ratio * n_attack))))


def run_curriculum(
    cfg: PipelineConfig, run: Any, graphs: Any, device: torch.device, tracking_uri: str | None
) -> dict[str, float]:
    check_inference_ids(cfg.gat.inference_ids, cfg.gat.id_mask)
    hide = cfg.gat.inference_ids == "hide"
    gen = seed_everything(cfg.train.seed)
    vgae_run = resolve_prerequisite(cfg, Stage.AUTOENCODER, tracking_uri)
    run.set_tags({prerequisite_tag(Stage.AUTOENCODER): vgae_run})
    vgae, _ = load_run_model(vgae_run, tracking_uri, CANGraphVGAE, graphs, device)

    # rank normal training windows easy -> hard by the VGAE's reconstruction error
    y_train = graphs.train.y
    normals = torch.nonzero(y_train == 0).flatten()
    attacks = torch.nonzero(y_train == 1).flatten()
    score = torch.from_numpy(vgae_scores(vgae, graphs.train, device, indices=normals).score)
    normals_easy_first = normals[torch.argsort(score, stable=True)]
    del vgae

    kwargs = gat_kwargs(cfg, graphs)
    model = CANGraphGAT(**kwargs).to(device)
    final: dict[str, float] = {Metric.NUM_PARAMETERS.value: count_parameters(model)}
    teacher = None
    if cfg.kd.enabled:
        teacher, _ = load_run_model(cfg.kd.teacher_run_id, tracking_uri, CANGraphGAT, graphs, device)
        freeze(teacher)
        final[Metric.TEACHER_NUM_PARAMETERS.value] = count_parameters(teacher)
        # under KD the ids are hidden once per batch for teacher and student alike (below), not again in the student
        model.id_mask = 0.0
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    val_y = graphs.val.y.numpy()
    schedule: list[dict[str, float]] = []

    def run_epoch(epoch: int) -> float:
        n = curriculum_normals(
            len(normals), len(attacks), epoch, cfg.train.epochs, cfg.gat.curriculum_start_ratio, cfg.gat.curriculum_ramp
        )
        indices = torch.cat([attacks, normals_easy_first[:n]])
        schedule.append({"epoch": epoch, "normals": n, "attacks": len(attacks)})
        model.train()
        total, count = 0.0, 0
        for batch in graphs.train.batches(cfg.train.batch_size, shuffle=True, generator=gen, indices=indices):
            batch = batch.to(device)
            if teacher is not None:
                batch.node_id = mask_window_ids(batch, cfg.gat.id_mask, training=True)
            logits = model(batch)
            if teacher is not None:
                with torch.no_grad():
                    t_logits = teacher(batch)
                loss = gat_kd_loss(logits, t_logits, batch.y, cfg.kd.temperature, cfg.kd.alpha)
            else:
                loss = F.cross_entropy(logits, batch.y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
            optimizer.step()
            total += loss.item() * batch.num_graphs
            count += batch.num_graphs
        run.log_metrics(
            {Metric.CURRICULUM_RATIO.value: n / max(len(attacks), 1), Metric.CURRICULUM_WINDOWS.value: len(indices)},
            step=epoch,
        )
        return total / max(count, 1)

    def validate() -> EpochReport:
        # judged with and without ids (what id masking trains for: an unknown car's ids mislead); the monitored loss
        # is the mean of both, so a checkpoint must be good at both; val_f1 is the deployed way (gat.inference_ids)
        shown = gat_logits(model, graphs.val, device)
        if len(shown) == 0:
            return EpochReport(0.0, 0.0, 0.0)
        views = {False: shown}
        if cfg.gat.id_mask > 0:
            views[True] = gat_logits(model, graphs.val, device, hide_ids=True)
        val_loss = float(np.mean([F.cross_entropy(v, graphs.val.y).item() for v in views.values()]))
        f1 = {
            h: classification_metrics(val_y, attack_probability(v) >= DECISION_THRESHOLD, attack_probability(v))
            for h, v in views.items()
        }
        extra = {Metric.VAL_AUC.value: f1[hide][Metric.AUC.value]}
        if len(views) == 2:
            other = Metric.VAL_F1_WITH_IDS if hide else Metric.VAL_F1_HIDDEN_IDS
            extra[other.value] = f1[not hide][Metric.F1.value]
        return EpochReport(val_loss, val_loss, f1[hide][Metric.F1.value], extra)

    # monitored by validation loss (with and without ids): validation F1 reaches 1.0 within 2-3 epochs on hcrl_sa,
    # and picking the first such epoch kept an under-trained KD student (p(attack) ~0.25 on normal windows)
    result = fit(
        model,
        optimizer,
        cfg.train,
        run_epoch,
        validate,
        run,
        monitor=Metric.VAL_LOSS.value,
        checkpoint=lambda: checkpoint_payload(
            Arch.GAT.value,
            kwargs,
            model,
            {prerequisite_tag(Stage.AUTOENCODER): vgae_run, "inference_ids": cfg.gat.inference_ids},
        ),
    )
    p = attack_probability(gat_logits(model, graphs.val, device, hide_ids=hide))
    pred = p >= DECISION_THRESHOLD
    m = classification_metrics(val_y, pred, p)
    final.update(headline(m))
    final.update(
        {
            Metric.VAL_LOSS.value: result.best.val_loss,
            Metric.THRESHOLD.value: DECISION_THRESHOLD,
            Metric.TRAIN_SECONDS.value: result.seconds,
        }
    )
    run.log_final(final)
    run.log_json(
        "metrics.json",
        {
            "final": final,
            "validation": m,
            "curriculum": schedule,
            "best_epoch": result.best_epoch,
            "epochs_run": result.epochs_run,
            "stopped_early": result.stopped_early,
            "history": result.history,
            prerequisite_tag(Stage.AUTOENCODER): vgae_run,
        },
    )
    for name, fig in (("val_confusion.png", plots.confusion_matrix_figure(val_y, pred, cfg.run_name)),):
        run.log_figure(name, fig)
        plots.close(fig)
    return final


__all__ = ["curriculum_normals", "run_curriculum"]

"""The epoch loop every stage shares: seeding, device, early stopping, best checkpoint, per-epoch history."""

from __future__ import annotations

import copy
import logging
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kdgat_core.config import KdgatError, Metric, TrainConfig

CHECKPOINT_FILE = "best.pt"
log = logging.getLogger("kdgat.train")


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; returns a torch generator for shuffling batches."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def set_threads(threads: int) -> None:
    if threads > 0:
        torch.set_num_threads(threads)


def resolve_device(name: str) -> torch.device:
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise KdgatError(f"--device {name} asked for, but CUDA is not available on this machine; use --device cpu.")
        return torch.device(name)
    raise KdgatError(f"Unknown device '{name}'; use cpu or cuda.")


@dataclass
class EpochReport:
    train_loss: float
    val_loss: float
    val_f1: float
    extra: dict[str, float] = field(default_factory=dict)


@dataclass
class FitResult:
    best_epoch: int
    epochs_run: int
    best: EpochReport
    stopped_early: bool
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)


def fit(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    train: TrainConfig,
    run_epoch: Callable[[int], float],
    validate: Callable[[], EpochReport],
    run: Any,
    monitor: str = Metric.VAL_F1.value,
    checkpoint: Callable[[], dict] | None = None,
    modules: tuple[torch.nn.Module, ...] = (),
) -> FitResult:
    """Train for up to train.epochs epochs; keep the state with the best `monitor` (val_f1 up or val_loss down).

    `run_epoch(epoch)` trains one epoch and returns its mean loss; `validate()` reports on the validation split.
    The best state is written to <artifact_dir>/best.pt (`checkpoint()` gives the payload) and restored at the end.
    """
    lower_better = monitor == Metric.VAL_LOSS.value
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min" if lower_better else "max", factor=0.5, patience=max(1, train.patience // 2)
    )
    best_value, best_epoch, best_report = math.inf if lower_better else -math.inf, -1, None
    best_states: list[dict] = []
    started = time.perf_counter()
    stopped_early = False
    history: list[dict[str, float]] = []
    epoch = -1
    for epoch in range(train.epochs):
        t0 = time.perf_counter()
        train_loss = run_epoch(epoch)
        report = validate()
        seconds = time.perf_counter() - t0
        value = report.val_loss if lower_better else report.val_f1
        improved = value < best_value if lower_better else value > best_value
        # ties on F1 (common once validation is perfect) go to the lower validation loss
        if not lower_better and value == best_value and best_report is not None:
            improved = report.val_loss < best_report.val_loss
        if improved or best_report is None:
            best_value, best_epoch, best_report = value, epoch, report
            best_states = [copy.deepcopy(m.state_dict()) for m in (model, *modules)]
            if checkpoint is not None:
                save_checkpoint(Path(run.artifact_dir) / CHECKPOINT_FILE, checkpoint())
        row = {
            Metric.TRAIN_LOSS.value: train_loss,
            Metric.VAL_LOSS.value: report.val_loss,
            Metric.VAL_F1.value: report.val_f1,
            Metric.LR.value: optimizer.param_groups[0]["lr"],
            Metric.EPOCH_SECONDS.value: seconds,
            **report.extra,
        }
        history.append(row)
        log.info(
            "epoch %d/%d  train_loss %.4f  val_loss %.4f  val_f1 %.4f  %.1fs%s",
            epoch + 1,
            train.epochs,
            train_loss,
            report.val_loss,
            report.val_f1,
            seconds,
            "  *" if best_epoch == epoch else "",
        )
        run.log_metrics(row, step=epoch)
        scheduler.step(value)
        if epoch - best_epoch >= train.patience:
            stopped_early = True
            break
    for m, state in zip((model, *modules), best_states):
        m.load_state_dict(state)
    assert best_report is not None, "train.epochs must be at least 1"
    from kdgat_core.stages import plots

    fig = plots.history_figure(history, run.cfg.run_name if hasattr(run, "cfg") else "")
    run.log_figure("history.png", fig)
    plots.close(fig)
    return FitResult(best_epoch, epoch + 1, best_report, stopped_early, time.perf_counter() - started, history)


def save_checkpoint(path: Path, payload: dict) -> None:
    """Write atomically: a killed job never leaves a half-written best.pt behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, run_id: str) -> dict:
    """A checkpoint payload; a missing or unreadable file is one clear sentence."""
    if not path.is_file():
        raise KdgatError(f"Run {run_id} has no checkpoint at {path}; re-run that stage.")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged file
        raise KdgatError(
            f"Checkpoint {path} of run {run_id} is corrupt or unreadable ({type(exc).__name__}); re-run that stage."
        ) from None
    if not isinstance(payload, dict) or "state_dict" not in payload or "kwargs" not in payload:
        raise KdgatError(f"Checkpoint {path} of run {run_id} is not a kdgat checkpoint; re-run that stage.")
    return payload

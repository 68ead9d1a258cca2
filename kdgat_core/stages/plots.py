"""PNG figures for run artifacts (matplotlib's Agg backend: no display needed on a cluster node)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from sklearn import metrics as skm


def confusion_matrix_figure(y: np.ndarray, pred: np.ndarray, title: str) -> Figure:
    cm = skm.confusion_matrix(y, pred, labels=[0, 1])
    fig, ax = plt.subplots(figsize=(4, 3.5), dpi=100)
    skm.ConfusionMatrixDisplay(cm, display_labels=["normal", "attack"]).plot(ax=ax, colorbar=False, values_format="d")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def roc_figure(y: np.ndarray, scores: dict[str, np.ndarray], title: str) -> Figure:
    fig, ax = plt.subplots(figsize=(4.5, 4), dpi=100)
    if len(np.unique(y)) == 2:
        for name, s in scores.items():
            fpr, tpr, _ = skm.roc_curve(y, s)
            ax.plot(fpr, tpr, label=f"{name} (AUC {skm.roc_auc_score(y, s):.3f})")
        ax.legend(loc="lower right", fontsize=8)
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def score_histogram_figure(y: np.ndarray, score: np.ndarray, threshold: float, title: str) -> Figure:
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=100)
    log_s = np.log10(np.maximum(score, 1e-12))
    bins: list[float] | int = np.linspace(log_s.min(), log_s.max() + 1e-9, 50).tolist() if len(log_s) else 10
    for label, name in ((0, "normal"), (1, "attack")):
        if (y == label).any():
            ax.hist(log_s[y == label], bins=bins, alpha=0.6, label=name)
    ax.axvline(np.log10(max(threshold, 1e-12)), color="k", ls="--", lw=1, label="threshold")
    ax.set_xlabel("log10 reconstruction error")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def history_figure(history: list[dict[str, float]], title: str) -> Figure:
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=100)
    epochs = list(range(len(history)))
    for key in ("train_loss", "val_loss"):
        ax.plot(epochs, [h[key] for h in history], label=key)
    ax.set_xlabel("epoch")
    ax.set_yscale("log" if all(h["train_loss"] > 0 and h["val_loss"] > 0 for h in history) else "linear")
    ax2 = ax.twinx()
    ax2.plot(epochs, [h["val_f1"] for h in history], "g--", label="val_f1")
    ax2.set_ylim(0, 1.02)
    ax.legend(loc="upper left", fontsize=8)
    ax2.legend(loc="upper right", fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def close(fig: Figure) -> None:
    plt.close(fig)

"""Knowledge-distillation losses: GAT logits (Hinton) and VGAE latents (projection) + reconstructions."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from kdgat_core.models import VGAEOutput


def gat_kd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    y: Tensor,
    temperature: float = 4.0,
    alpha: float = 0.7,
    sample_weight: Tensor | None = None,
) -> Tensor:
    """alpha * T^2 * KL(softmax(teacher/T) || softmax(student/T)) + (1 - alpha) * CE(student, y)."""
    t = temperature
    log_p_student = F.log_softmax(student_logits / t, dim=-1)
    p_teacher = F.softmax(teacher_logits / t, dim=-1)
    kl = F.kl_div(log_p_student, p_teacher, reduction="batchmean")
    ce = F.cross_entropy(student_logits, y, weight=sample_weight)
    return alpha * t * t * kl + (1.0 - alpha) * ce


class LatentProjection(nn.Module):
    """Maps the student's latent space into the teacher's for latent matching (training only, not deployed)."""

    def __init__(self, student_dim: int, teacher_dim: int):
        super().__init__()
        self.proj = nn.Linear(student_dim, teacher_dim)

    def forward(self, z: Tensor) -> Tensor:
        return self.proj(z)


def vgae_kd_loss(
    student_out: VGAEOutput, teacher_out: VGAEOutput, projection: LatentProjection, own_loss: Tensor, alpha: float = 0.7
) -> Tensor:
    """alpha * (latent match through the projection + reconstruction match) + (1 - alpha) * the student's own loss."""
    latent = F.mse_loss(projection(student_out.mu), teacher_out.mu)
    recon = F.mse_loss(student_out.x_hat, teacher_out.x_hat) + F.kl_div(
        F.log_softmax(student_out.id_logits, dim=-1), F.softmax(teacher_out.id_logits, dim=-1), reduction="batchmean"
    )
    return alpha * (latent + recon) + (1.0 - alpha) * own_loss


def freeze(model: nn.Module) -> nn.Module:
    """Eval mode and no gradients: a teacher never changes while a student learns from it."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


__all__ = ["LatentProjection", "freeze", "gat_kd_loss", "vgae_kd_loss"]

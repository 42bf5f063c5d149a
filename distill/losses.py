"""The losses of stage (b), and how labelled views join a transfer batch."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F


def kd_loss(student_logits, teacher_logits, temperature: float) -> torch.Tensor:
    """Hinton KL between softened predictions, scaled by T^2 so gradients keep their size."""
    t = temperature
    return F.kl_div(F.log_softmax(student_logits / t, -1), F.log_softmax(teacher_logits / t, -1),
                    log_target=True, reduction="batchmean") * t * t


def info_nce(a: torch.Tensor, b: torch.Tensor, tau: float = 0.07) -> torch.Tensor:
    """Symmetric CLIP-style contrastive loss: row i of a matches row i of b."""
    logits = F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T / tau
    target = torch.arange(len(a), device=a.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def joined(views: torch.Tensor, mixed: Optional[torch.Tensor], size: int) -> torch.Tensor:
    """Transfer views and mixed-in labelled views as one batch, at the student's size."""
    if mixed is None:
        return views
    if views.shape[-1] != size:
        views = F.interpolate(views, size=(size, size), mode="bilinear", antialias=True)
    return torch.cat([views, mixed])


def mix(transfer_loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor, share: float) -> torch.Tensor:
    return (1 - share) * transfer_loss + share * F.cross_entropy(logits, labels)

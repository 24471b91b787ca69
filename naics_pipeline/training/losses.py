"""The training losses (plain torch): hyperbolic InfoNCE over the curriculum's negatives, the
exclusion hinge, the MoE load-balancing term and the text-alignment terms. Distances come from
training.lorentz; the curvature is keyword-only, as there.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from naics_pipeline.training import lorentz


def load_balancing_loss(probs: torch.Tensor, top1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Switch-style balance E * sum_e f_e * P_e - 1, with f_e the share of top-1 routes (no gradient)
    and P_e the mean gate probability: 0 for uniform routing, E - 1 when one expert takes all."""
    num_experts = probs.shape[-1]
    f = F.one_hot(top1, num_experts).float().mean(0)
    return num_experts * (f.detach() * probs.mean(0)).sum() - 1.0, f


def info_nce(points: torch.Tensor, anchor: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor,
             *, c: float, temperature: float) -> torch.Tensor:
    """Hyperbolic InfoNCE: -log softmax over [-d(a, p), -d(a, n_1..K)] / temperature, positive first."""
    a = points[anchor].unsqueeze(1)                                      # (B, 1, d+1)
    others = torch.cat([points[positive].unsqueeze(1), points[negatives]], dim=1)   # (B, 1+K, d+1)
    logits = -lorentz.distance(a, others, c=c) / temperature
    target = torch.zeros(len(anchor), dtype=torch.long, device=points.device)
    return F.cross_entropy(logits, target)


def exclusion_hinge(points: torch.Tensor, code: torch.Tensor, excluded: torch.Tensor, ref: torch.Tensor,
                    mask: torch.Tensor, *, c: float, margin: float) -> torch.Tensor:
    """Mean of relu(1 + margin - d(code, excluded) / r) over exclusion links, with r the code's mean
    distance to its reference codes (siblings, else parent). r is detached: the hinge moves the
    excluded pair apart instead of pulling the siblings together, which would bend the tree."""
    a = points[code]
    d = lorentz.distance(a, points[excluded], c=c)
    to_ref = lorentz.distance(a.unsqueeze(1), points[ref], c=c)
    r = (to_ref * mask).sum(1) / mask.sum(1)
    return F.relu(1.0 + margin - d / r.detach().clamp_min(1e-6)).mean()


def text_losses(queries: torch.Tensor, leaf_points: torch.Tensor, target: torch.Tensor, negatives: torch.Tensor,
                *, c: float, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(cross-entropy over every leaf, InfoNCE against the drawn hard negatives) for queries (B, d+1),
    leaf points (L, d+1), true leaf positions (B,) and negative leaf positions (B, K)."""
    logits = -lorentz.pairwise_distance(queries, leaf_points, c=c) / temperature          # (B, L)
    ce = F.cross_entropy(logits, target)
    picked = torch.cat([target.unsqueeze(1), negatives], dim=1)
    hard = F.cross_entropy(torch.gather(logits, 1, picked), torch.zeros_like(target))
    return ce, hard

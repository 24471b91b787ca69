"""Hyperbolic Mixture-of-Experts embedding model and the text query head (plain torch, architecture
only: the losses are in training.losses).

text channels (4 x D) + level --> MoE fusion (top-2 gating, load-balancing loss) --> tangent vector
--> exponential map at the origin of the Lorentz hyperboloid {x : <x, x>_L = -1/c, x0 > 0}.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from naics_pipeline.settings import config_field
from naics_pipeline.training import lorentz
from naics_pipeline.training.losses import load_balancing_loss

N_LEVELS = 5  # NAICS levels 2..6
ROUTER_DIM = 16
ROUTER_TEMPERATURE = 0.5


@dataclass
class ModelConfig:
    """The architecture and its loss hyperparameters; the fields declared by `config_field` are
    settings (naics_pipeline/settings.py gives their defaults and meanings)."""
    text_dim: int = 384
    channels: int = 4
    hidden_dim: int = 512
    embedding_dim: int = config_field("NAICS_EMBEDDING_DIM")
    num_experts: int = 4
    top_k: int = 2
    curvature: float = config_field("NAICS_CURVATURE")
    temperature: float = config_field("NAICS_TEMPERATURE")
    load_balancing_coef: float = config_field("NAICS_LOAD_BALANCING_COEF")
    dropout: float = 0.0
    # Tangent norm (distance from the origin) set by the code's level through a learned increasing
    # radius per level; the MoE output sets only the direction. Trees embed in hyperbolic space this
    # way (deeper = farther out), and it orders cross-sector pairs by depth, which no hardness-1
    # negative teaches. False: the MoE output is the tangent vector as is.
    radius_by_level: bool = True

    def to_dict(self) -> dict:
        return asdict(self)


class _AffineLinear(torch.autograd.Function):
    """(xhat * gamma + beta) @ w + b for a constant xhat (the LayerNorm'd, frozen text features).

    Autograd would compute d(input) = grad @ w.T, a matmul as large as d(w), only to reduce it to the
    LayerNorm's d(gamma) and d(beta). Both follow from m = xhat.T @ grad, which d(w) needs anyway, so
    the backward costs one large matmul instead of two (the CPU step is bound by these matmuls)."""

    @staticmethod
    def forward(ctx, xhat, gamma, beta, w, b):
        ctx.save_for_backward(xhat, gamma, beta, w)
        ctx.bias_shape = b.shape
        return torch.addmm(b, xhat * gamma + beta, w)

    @staticmethod
    def backward(ctx, grad):
        xhat, gamma, beta, w = ctx.saved_tensors
        m = xhat.T @ grad                     # (in, out)
        s = grad.sum(0)                       # (out,)
        d_w = gamma[:, None] * m + beta[:, None] * s
        return None, (w * m).sum(1), w @ s, d_w, s.view(ctx.bias_shape)


class MoEFusion(nn.Module):
    """Top-k gated experts. Returns the fused output, the load-balancing loss and routing stats."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, num_experts: int, top_k: int, dropout: float):
        super().__init__()
        self.top_k = min(top_k, num_experts)
        self.num_experts = num_experts
        # Cosine router (X-MoE, Chi et al. 2022): logits are cosines / ROUTER_TEMPERATURE, bounded in
        # [-2, 2], so the softmax cannot saturate and the balance loss always keeps a gradient. A
        # plain linear gate collapsed onto one expert within a few hundred steps here.
        # Centred across codes first: per-code LayerNorm'd features share one dominant direction,
        # which sends every code to the same expert whatever the keys are.
        self.gate_norm = nn.BatchNorm1d(in_dim, affine=False)
        self.gate_proj = nn.Linear(in_dim, ROUTER_DIM, bias=False)
        self.expert_keys = nn.Parameter(torch.randn(num_experts, ROUTER_DIM))
        # The experts as one batched MLP (one matmul per layer for all of them, not one per expert):
        # the step is bound by kernel launches, not arithmetic (2,125 codes per step).
        self.w1 = nn.Parameter(torch.empty(num_experts, in_dim, hidden))
        self.b1 = nn.Parameter(torch.zeros(num_experts, 1, hidden))
        self.w2 = nn.Parameter(torch.empty(num_experts, hidden, out_dim))
        self.b2 = nn.Parameter(torch.zeros(num_experts, 1, out_dim))
        for w in (self.w1, self.w2):   # nn.Linear's default initialisation, per expert
            bound = 1 / w.shape[1] ** 0.5
            nn.init.uniform_(w, -bound, bound)
        self.dropout = nn.Dropout(dropout)

    def experts(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in) -> (N, E, out): every expert on every row."""
        hidden = self.dropout(F.gelu(torch.baddbmm(self.b1, x.unsqueeze(0).expand(self.num_experts, -1, -1), self.w1)))
        return torch.baddbmm(self.b2, hidden, self.w2).transpose(0, 1)

    def routed_experts(self, x: torch.Tensor, weights: torch.Tensor, affine: tuple | None = None) -> torch.Tensor:
        """sum_e weights[:, e] * expert_e(x), running each expert only on the rows routed to it: the same
        values and gradients as the dense mix (the other weights are exactly 0) at top_k / E of the
        expert arithmetic. Used on the CPU, where arithmetic is the cost; a GPU step is bound by kernel
        launches, and the dense form is one graph-capturable shape. With `affine` = (xhat, gamma, beta),
        x = xhat * gamma + beta for a constant xhat and the first layer is an _AffineLinear."""
        out = x.new_zeros(len(x), self.w2.shape[-1])
        for e in range(self.num_experts):
            rows = weights[:, e].nonzero().squeeze(1)
            if affine is None:
                pre = torch.addmm(self.b1[e], x[rows], self.w1[e])
            else:
                xhat, gamma, beta = affine
                pre = _AffineLinear.apply(xhat[rows], gamma, beta, self.w1[e], self.b1[e])
            hidden = self.dropout(F.gelu(pre))
            out = out.index_add(0, rows, weights[rows, e, None] * torch.addmm(self.b2[e], hidden, self.w2[e]))
        return out

    def forward(self, x: torch.Tensor, affine: tuple | None = None):
        logits = F.normalize(self.gate_proj(self.gate_norm(x)), dim=-1) @ F.normalize(self.expert_keys, dim=-1).T
        logits = logits / ROUTER_TEMPERATURE
        if self.training:
            # Noisy top-k gating (Shazeer et al. 2017): noise breaks routing ties and keeps
            # under-used experts in play, so the balance loss has something to work with.
            logits = logits + 0.5 * torch.randn_like(logits)
        probs = F.softmax(logits, dim=-1)                                # (N, E)
        top_p, top_i = probs.topk(self.top_k, dim=-1)
        weights = torch.zeros_like(probs).scatter(-1, top_i, top_p / top_p.sum(-1, keepdim=True))
        if x.is_cuda:   # dense: all experts on all rows, mixed with the sparse top-k weights
            fused = (weights.unsqueeze(-1) * self.experts(x)).sum(1)
        else:
            fused = self.routed_experts(x, weights, affine)
        lb, f = load_balancing_loss(probs, top_i[:, 0])
        return fused, lb, f


class NaicsEmbedder(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        in_dim = cfg.channels * cfg.text_dim + cfg.channels + N_LEVELS
        self.norm = nn.LayerNorm(in_dim)
        self.moe = MoEFusion(in_dim, cfg.hidden_dim, cfg.embedding_dim, cfg.num_experts, cfg.top_k, cfg.dropout)
        # softplus(0.55) ~= 1: levels start one unit of radius apart.
        self.radius_steps = nn.Parameter(torch.full((N_LEVELS,), 0.55)) if cfg.radius_by_level else None

    def level_radius(self, level: torch.Tensor) -> torch.Tensor:
        return torch.cumsum(F.softplus(self.radius_steps), dim=0)[level - 2]

    def forward(self, channels: torch.Tensor, present: torch.Tensor, level: torch.Tensor):
        """channels (N, 4, D), present (N, 4) bool, level (N,) in 2..6 -> points (N, d+1), lb, usage."""
        x = torch.cat([channels.flatten(1), present.float(), F.one_hot(level - 2, N_LEVELS).float()], dim=-1)
        if x.is_cuda or x.requires_grad:
            tangent, lb, usage = self.moe(self.norm(x))
        else:   # CPU, constant features: the experts' first layer folds the LayerNorm's affine in
            xhat = F.layer_norm(x, self.norm.normalized_shape, eps=self.norm.eps)
            gamma, beta = self.norm.weight, self.norm.bias
            tangent, lb, usage = self.moe(xhat * gamma + beta, affine=(xhat, gamma, beta))
        with torch.autocast(device_type=tangent.device.type, enabled=False):
            # float64: coordinates grow like e^radius, and float32 cancellation in <x, y>_L spoils
            # distances between nearby points far from the origin (2,125 points: cheap either way).
            tangent = tangent.double()
            if self.radius_steps is not None:
                tangent = F.normalize(tangent, dim=-1) * self.level_radius(level).double().unsqueeze(-1)
            points = lorentz.expmap0(tangent, c=self.cfg.curvature)
        return points, lb, usage


class QueryHead(nn.Module):
    """Sentence embedding -> a point on the 6-digit codes' shell of the Lorentz model."""

    def __init__(self, text_dim: int, hidden: int, embedding_dim: int):
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(text_dim), nn.Linear(text_dim, hidden), nn.GELU(),
                                 nn.Linear(hidden, embedding_dim))

    def forward(self, features: torch.Tensor, radius: torch.Tensor, *, c: float) -> torch.Tensor:
        direction = F.normalize(self.net(features).double(), dim=-1)
        return lorentz.expmap0(direction * radius.double(), c=c)

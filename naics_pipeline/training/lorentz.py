"""The Lorentz (hyperboloid) model of hyperbolic space with curvature -c, in torch.

Points are x in R^(d+1) with <x, x>_L = -1/c and x_0 > 0. This is the one implementation of the
geometry: the model, the losses, the metrics and retrieval all call it. Tensors in, tensors out;
`pairwise_distance` also takes numpy arrays (computed in float64, returned as numpy). The curvature
is keyword-only (`c=`), as in geoopt. Run it in float64 where points sit far from the origin:
coordinates grow like e^radius and float32 cancellation in <x, y>_L then spoils the distances
between nearby points.
"""
from __future__ import annotations

import numpy as np
import torch

MAX_TANGENT_NORM = 40.0  # cosh(40) ~ 1e17: beyond this even float64 coordinates overflow


def _eps(t: torch.Tensor) -> float:
    return torch.finfo(t.dtype).eps if t.is_floating_point() else 1e-12


def inner(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Minkowski inner product <x, y>_L = -x_0 y_0 + sum_i x_i y_i over the last axis."""
    return -x[..., 0] * y[..., 0] + (x[..., 1:] * y[..., 1:]).sum(-1)


def expmap0(v: torch.Tensor, *, c: float) -> torch.Tensor:
    """Exponential map at the origin (1/sqrt(c), 0, ..., 0): a tangent vector v in R^d to a point."""
    sqrt_c = c ** 0.5
    norm = v.norm(dim=-1, keepdim=True).clamp_min(_eps(v))
    arg = (sqrt_c * norm).clamp_max(MAX_TANGENT_NORM)
    return torch.cat([torch.cosh(arg) / sqrt_c, torch.sinh(arg) * v / (sqrt_c * norm)], dim=-1)


def _arcosh_of(minus_c_inner: torch.Tensor, *, c: float) -> torch.Tensor:
    # Clamped just above 1: arcosh' is infinite at 1, and rounding can put -c<x, x>_L below it.
    return torch.acosh(minus_c_inner.clamp_min(1.0 + _eps(minus_c_inner))) / c ** 0.5


def distance(x: torch.Tensor, y: torch.Tensor, *, c: float) -> torch.Tensor:
    """Geodesic distance between matching points (broadcast over leading axes)."""
    return _arcosh_of(-c * inner(x, y), c=c)


def pairwise_distance(x, y, *, c: float):
    """(len(x), len(y)) distances between two point sets; numpy in, numpy out."""
    as_numpy = isinstance(x, np.ndarray)
    xt, yt = torch.as_tensor(x), torch.as_tensor(y)
    if as_numpy:
        xt, yt = xt.double(), yt.double()
    minus_inner = torch.outer(xt[:, 0], yt[:, 0]) - xt[:, 1:] @ yt[:, 1:].T
    d = _arcosh_of(c * minus_inner, c=c)
    return d.numpy() if as_numpy else d

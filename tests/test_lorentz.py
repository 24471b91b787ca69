"""The one Lorentz implementation: on the hyperboloid, equal in float32 and float64 where float32 can
hold the points, and equal to the Poincare-ball formula computed independently."""
import numpy as np
import pytest
import torch

from naics_pipeline.training import lorentz


def poincare_distance(x: np.ndarray, y: np.ndarray, c: float) -> np.ndarray:
    """Brute force: map both point sets to the Poincare ball and use its closed-form distance."""
    def ball(p):
        return p[:, 1:] / (1 + np.sqrt(c) * p[:, :1])
    u, v = ball(x), ball(y)
    out = np.zeros((len(u), len(v)))
    for i, a in enumerate(u):
        for j, b in enumerate(v):
            num = 2 * c * np.sum((a - b) ** 2)
            den = (1 - c * np.sum(a * a)) * (1 - c * np.sum(b * b))
            out[i, j] = np.arccosh(1 + num / den) / np.sqrt(c)
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("c", [0.5, 1.0, 2.0])
def test_float64_matches_brute_force_and_float32(seed, c):
    rng = np.random.default_rng(seed)
    v = torch.as_tensor(rng.normal(size=(12, 5)) * rng.uniform(0.1, 2.0, size=(12, 1)))
    x64 = lorentz.expmap0(v.double(), c=c)
    assert torch.allclose(lorentz.inner(x64, x64), torch.full((12,), -1 / c, dtype=torch.float64), atol=1e-9)
    d64 = lorentz.pairwise_distance(x64.numpy(), x64.numpy(), c=c)
    off = ~np.eye(12, dtype=bool)
    np.testing.assert_allclose(d64[off], poincare_distance(x64.numpy(), x64.numpy(), c)[off], atol=1e-6)
    assert np.abs(np.diag(d64)).max() < 1e-4     # a point's distance to itself is rounding noise
    d32 = lorentz.pairwise_distance(lorentz.expmap0(v.float(), c=c), lorentz.expmap0(v.float(), c=c), c=c)
    assert d32.dtype == torch.float32
    np.testing.assert_allclose(d32.numpy()[off], d64[off], rtol=1e-3, atol=1e-3)
    # broadcast distance == pairwise distance
    bd = lorentz.distance(x64.unsqueeze(1), x64.unsqueeze(0), c=c)
    np.testing.assert_allclose(bd.numpy()[off], d64[off], atol=1e-7)


def test_distance_from_origin_is_the_tangent_norm():
    for c in (0.5, 1.0, 2.0):
        origin = lorentz.expmap0(torch.zeros(1, 3, dtype=torch.float64), c=c)
        v = torch.tensor([[0.3, 0.4, 1.2]], dtype=torch.float64)
        assert lorentz.distance(origin, lorentz.expmap0(v, c=c), c=c).item() == pytest.approx(1.3, abs=1e-9)


def test_float32_loses_nearby_points_far_out_where_float64_does_not():
    """Why the model computes the geometry in float64: two points 0.01 apart at radius 9."""
    v = torch.tensor([[9.0, 0.0], [9.0, 0.01]], dtype=torch.float64)
    exact = lorentz.distance(lorentz.expmap0(v[:1], c=1.0), lorentz.expmap0(v[1:], c=1.0), c=1.0).item()
    low = lorentz.distance(lorentz.expmap0(v[:1].float(), c=1.0), lorentz.expmap0(v[1:].float(), c=1.0), c=1.0).item()
    points = lorentz.expmap0(v, c=1.0).numpy()
    assert exact == pytest.approx(poincare_distance(points[:1], points[1:], 1.0)[0, 0], rel=1e-6)
    assert abs(low - exact) > 0.01 * exact


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_gradients_are_finite_at_zero_distance(dtype):
    """arcosh' is infinite at 1, and rounding puts -c<x, x>_L at or below 1 for many points (the origin
    exactly): the clamp in _arcosh_of keeps d(x, x) and its gradient finite, so a positive that
    coincides with its anchor cannot turn a training step into NaN."""
    g = torch.Generator().manual_seed(0)
    v = torch.cat([torch.zeros(1, 3), torch.randn(64, 3, generator=g) * 2]).to(dtype).requires_grad_(True)
    x = lorentz.expmap0(v, c=1.0)
    d = lorentz.distance(x, x.detach().clone(), c=1.0)
    d.sum().backward()
    assert torch.isfinite(d).all()
    assert v.grad is not None and torch.isfinite(v.grad).all()

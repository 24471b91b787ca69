"""Fusing the per-code signals into one probability per 6-digit code: a conditional logit.

Each candidate code c of a text q gets a feature vector x(q, c) (the stage's geometry log-probability,
the best cosine over the code's known texts, the title's cosine, lexical similarity, the same one level
up: see text.index.FEATURES). The score is the linear w . x(q, c) and the probability a softmax of the
scores over all candidates. The weights (whose size is also the temperature) are fitted by minimising
the negative log-likelihood of the true code on the validation split (data.entry_splits), whose features come
from an index and a model that never saw those texts. The fit is convex in w: one optimum, found by
L-BFGS.

The fitted weights give too spread a top probability (over-confident where the fused distribution is
sharp, under-confident where it is flat), which one temperature cannot fix; so each text's scores are
scaled by its own temperature exp(a + b x H), H the entropy of its fused distribution, with (a, b)
fitted on out-of-fold scores of the validation split (text.index.fit_index)."""
from __future__ import annotations

import numpy as np

L2 = 1e-4   # ridge on the weights (NLL per text): keeps the fit finite where a feature separates perfectly


def log_softmax(scores: np.ndarray) -> np.ndarray:
    m = scores.max(axis=1, keepdims=True)
    return scores - m - np.log(np.exp(scores - m).sum(axis=1, keepdims=True))


def _weights(sample_weight, n: int, device=None):
    import torch

    if sample_weight is None:
        return torch.full((n,), 1.0 / max(n, 1), dtype=torch.float64, device=device)
    s = torch.as_tensor(sample_weight, dtype=torch.float64, device=device)
    return s / s.sum()


def fit_conditional_logit(features: np.ndarray, target: np.ndarray, l2: float = L2, max_iter: int = 200,
                          sample_weight: np.ndarray | None = None, device: str = "cpu") -> tuple[np.ndarray, dict]:
    """(Q, C, F) features, (Q,) true candidate positions -> (F,) weights and the fit's summary
    (mean NLL, top-1 on the fitting texts, iterations). `sample_weight` (Q,): each text's share of the
    NLL (default equal). float64 on `device` (a GPU where the caller has one)."""
    import torch

    q, c, f = features.shape
    x = torch.as_tensor(features, dtype=torch.float64, device=device).reshape(q * c, f)
    y = torch.as_tensor(target, dtype=torch.long, device=device)
    share = _weights(sample_weight, q, device)
    at_target = torch.arange(q, device=device) * c + y
    w = torch.zeros(f, dtype=torch.float64, device=device, requires_grad=True)
    opt = torch.optim.LBFGS([w], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-9, tolerance_change=1e-12)

    # The gradient of the softmax NLL in closed form, x^T (p - onehot(y)) x share: autograd through
    # (Q x C, F) float64 products took twice as long for the same weights (to 1e-13).
    @torch.no_grad()
    def closure():
        logp = torch.log_softmax((x @ w).reshape(q, c), dim=1)
        r = logp.exp().mul_(share[:, None]).reshape(-1)
        r[at_target] -= share
        w.grad = x.T @ r + 2 * l2 * w
        return -(logp.reshape(-1)[at_target] * share).sum() + l2 * (w * w).sum()
    opt.step(closure)
    with torch.no_grad():
        scores = (x @ w).reshape(q, c)
        nll = float(torch.nn.functional.cross_entropy(scores, y))
        top1 = float((scores.argmax(1) == y).double().mean())
    return w.detach().cpu().numpy(), {"nll": nll, "top1": top1, "texts": int(q)}


def entropy(scores):
    """(Q,) entropy of softmax(scores) per row; numpy or torch (Q, C) scores."""
    if isinstance(scores, np.ndarray):
        logp = log_softmax(scores)
        return -(np.exp(logp) * logp).sum(axis=1)
    import torch

    logp = torch.log_softmax(scores, dim=1)
    return -(logp.exp() * logp).sum(dim=1)


def calibrated_scores(scores, temperature):
    """Each text's (Q, C) scores times its own temperature exp(a + b x H), H the entropy of softmax(scores):
    `temperature` = (a, b); (0, 0) leaves the scores as they are. numpy or torch scores."""
    a, b = (float(v) for v in temperature)
    if a == 0.0 and b == 0.0:
        return scores
    h = entropy(scores)
    t = np.exp(a + b * h) if isinstance(scores, np.ndarray) else (a + b * h).exp()
    return scores * t[:, None]


def fit_temperature(scores: np.ndarray, target: np.ndarray, max_iter: int = 100,
                    sample_weight: np.ndarray | None = None) -> np.ndarray:
    """(a, b) minimising the (weighted) mean NLL of softmax(calibrated_scores(scores, (a, b))) at the
    true positions; (Q, C) scores of texts the scores' weights were not fitted on."""
    import torch

    s = torch.as_tensor(scores, dtype=torch.float64)
    y = torch.as_tensor(target, dtype=torch.long)
    share = _weights(sample_weight, len(y))
    h = entropy(s)
    mu, sd = float(h.mean()), max(float(h.std()), 1e-6) if len(h) > 1 else 1.0
    hz = (h - mu) / sd                      # fitted on the standardised entropy, returned for the raw one
    p = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([p], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-10, tolerance_change=1e-12)

    def closure():
        opt.zero_grad()
        nll = torch.nn.functional.cross_entropy(s * (p[0] + p[1] * hz).exp()[:, None], y, reduction="none")
        loss = (nll * share).sum()
        loss.backward()
        return loss
    opt.step(closure)
    a, b = p.detach().numpy()
    return np.array([a - b * mu / sd, b / sd])


def probabilities(features: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(Q, C, F) features -> (Q, C) probabilities over the candidates."""
    return np.exp(log_softmax(features @ weights))

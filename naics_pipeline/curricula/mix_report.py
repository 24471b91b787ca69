"""One simulated epoch of a sampling index and the mix report the builder writes into its meta.json
(requested and realized mix, shortfalls and where they went)."""
from __future__ import annotations

import time

import numpy as np

from naics_pipeline.curricula.mix_plan import expected_mix, fallback_flows
from naics_pipeline.curricula.sampler import Sampler
from naics_pipeline.curricula.sampling_index import HARDNESS, SamplingIndex


def simulate_epoch(index: SamplingIndex, seed: int = 0, batch_size: int = 4096, mode: str | None = None) -> dict:
    """Realized hardness mix, draws per pair and sampler speed over one epoch."""
    sampler = Sampler(index, batch_size=batch_size, seed=seed, mode=mode)
    counts = np.zeros(9, np.int64)
    draws = np.zeros(len(index), np.int64)
    t = time.perf_counter()
    rng = np.random.default_rng([seed, 0])
    order = sampler.epoch_order(rng)
    for i in range(0, len(order), batch_size):
        batch = sampler.batch(order[i:i + batch_size], rng)
        counts += np.bincount(batch.hardness.ravel(), minlength=9)
    seconds = time.perf_counter() - t
    np.add.at(draws, order, 1)
    total = counts.sum()
    return {"mode": sampler.mode, "negatives": counts, "draws": draws,
            "realized": counts / total if total else np.zeros(9),
            "samples_per_second": len(order) / seconds if seconds else 0.0}


def _shares(values: np.ndarray, keep) -> dict[str, float]:
    return {str(h): round(float(values[h]), 6) for h in HARDNESS if keep(h)}


def _distance_shares(index: SamplingIndex, weights: np.ndarray) -> dict[str, float]:
    d, inverse = np.unique(index.positive_distance, return_inverse=True)
    per = np.bincount(inverse, weights=weights, minlength=len(d))
    return {f"{v:g}": round(float(s), 6) for v, s in zip(d, per / per.sum())}


def mix_report(index: SamplingIndex, sim: dict) -> dict:
    """meta.json fields: mix, requested_mix, realized_mix, shortfalls (and global mode's positive shift)."""
    mode, requested, realized = sim["mode"], index.requested, sim["realized"]
    avail = index.available(np.arange(len(index)))
    out = {"mix": mode, "requested_mix": _shares(requested, lambda h: requested[h] > 0),
           "realized_mix": _shares(realized, lambda h: requested[h] > 0 or realized[h] > 0),
           "realized_negatives": {str(h): int(sim["negatives"][h]) for h in HARDNESS if sim["negatives"][h]},
           "candidates": {str(h): int(avail[:, h].sum()) for h in HARDNESS},
           "epoch_draws": int(sim["draws"].sum()), "sampler_samples_per_second": round(sim["samples_per_second"])}
    if mode == "per_pair":
        out["shortfalls"] = _per_pair_shortfalls(index, avail)
    else:
        out["shortfalls"] = _global_shortfalls(index, avail, realized, int(sim["negatives"].sum()))
        draws = sim["draws"]
        out["positive_shift"] = {
            "pairs_drawn_share": round(float((draws > 0).mean()), 6), "max_draws_per_pair": int(draws.max()),
            "positive_distance": {"per_pair": _distance_shares(index, np.ones(len(index))),
                                  "global": _distance_shares(index, draws.astype(np.float64))}}
    return out


def _per_pair_shortfalls(index: SamplingIndex, avail: np.ndarray) -> dict:
    flows = fallback_flows(index.allocation, avail)
    out = {}
    for h in HARDNESS:
        short = index.allocation[h] > avail[:, h]
        if h > 1 and short.any():
            out[str(h)] = {"candidates": int(avail[:, h].sum()), "pairs_with_candidates": int((avail[:, h] > 0).sum()),
                           "pairs_short": int(short.sum()),
                           "negatives_short": int((index.allocation[h] - avail[short, h]).sum()),
                           "went_to": {str(g): int(flows[h, g]) for g in range(h - 1, 0, -1) if flows[h, g]}}
    return out


def _global_shortfalls(index: SamplingIndex, avail: np.ndarray, realized: np.ndarray, negatives: int) -> dict:
    """Buckets whose fitted (expected) share stays below the request: no choice of pair weights
    within the global rule reaches it. The missing negatives are split over the buckets in excess."""
    weights, takes, _ = index.plan("global")
    expected = expected_mix(weights, takes, index.k)
    excess = np.maximum(realized - index.requested, 0)
    out = {}
    for h in HARDNESS:
        gap = index.requested[h] - expected[h]
        if index.requested[h] > 0 and gap > 1e-4:
            went = excess / excess.sum() * gap * negatives if excess.sum() > 0 else np.zeros(9)
            out[str(h)] = {"candidates": int(avail[:, h].sum()), "pairs_with_candidates": int((avail[:, h] > 0).sum()),
                           "requested": round(float(index.requested[h]), 6), "achievable": round(float(expected[h]), 6),
                           "negatives_short": int(round(gap * negatives)),
                           "went_to": {str(g): int(round(went[g])) for g in HARDNESS if round(went[g])}}
    return out

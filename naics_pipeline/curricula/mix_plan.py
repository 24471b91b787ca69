"""Mix plans: what each pair of a sampling index draws per bucket, in expectation.

Two readings of bucket_percentages (the curriculum's `mix`):
- per_pair (the guide's): each pair splits K by largest remainder; a bucket short of candidates
  hands its shortfall to the next easier level (8->7->...->1). Every pair is drawn once per epoch.
- global: the shares hold over the epoch's negatives. As if each negative's bucket h were drawn with
  probability w_h and then its pair with probability proportional to the bucket-h candidates the pair
  holds (at most K): a pair is drawn with weight sum_h w_h cap(p, h) / C_h and splits its K negatives in
  proportion to those terms (never more than it holds). The bucket weights w_h are fitted so that the
  epoch's expected mix equals the request. An epoch is len(pairs) draws (systematic sampling), so
  pairs that hold rare buckets come more often and the others less.
Both are expressed as one table per pair: the expected takes per bucket, as fixed-point cumulative
bounds that a per-row random offset rounds to integers summing to K (systematic rounding).
"""
from __future__ import annotations

import numpy as np

UNIT = 1 << 20        # takes per bucket in fixed point (1/UNIT of a negative)
PAIR_UNIT = 1 << 20   # epoch draws per pair in fixed point
MIX_TOLERANCE = 0.02  # global mode: realized within +-2 percentage points of the request
FIT_TOLERANCE = 1e-6


class SamplingError(ValueError):
    """A sampling index that cannot be built, read or drawn from as asked."""


def fallback_takes(allocation: np.ndarray, avail: np.ndarray) -> np.ndarray:
    """(B, 9) draws per hardness: each bucket's shortfall moves to the next easier level (8->7->...->1)."""
    take = np.zeros_like(avail)
    carry = np.zeros(len(avail), avail.dtype)
    for h in range(8, 0, -1):
        want = allocation[h] + carry
        take[:, h] = want if h == 1 else np.minimum(want, avail[:, h])
        carry = want - take[:, h]
    return take


def fallback_flows(allocation: np.ndarray, avail: np.ndarray) -> np.ndarray:
    """(9, 9) negatives requested at bucket o (row) and drawn at bucket h (column), summed over pairs.
    Attribution: a level serves its own allocation first, then carries from harder levels, hardest
    first (the sampler only sees the totals, which equal fallback_takes)."""
    flows = np.zeros((9, 9), np.int64)
    own = np.minimum(allocation[None, :], avail)
    own[:, 1] = allocation[1]
    spare = avail - own
    for o in range(8, 1, -1):
        flows[o, o] = own[:, o].sum()
        carry = allocation[o] - own[:, o]
        for h in range(o - 1, 0, -1):
            got = carry if h == 1 else np.minimum(carry, spare[:, h])
            spare[:, h] -= got
            carry = carry - got
            flows[o, h] = got.sum()
    flows[1, 1] = own[:, 1].sum()
    return flows


def _water_fill(prio: np.ndarray, cap: np.ndarray, total: np.ndarray) -> np.ndarray:
    """Per row, takes proportional to prio, none above cap, summing to total (<= the row's cap sum)."""
    takes = np.zeros_like(prio)
    free = prio > 0
    for _ in range(prio.shape[1] + 1):
        left = total - np.where(free, 0.0, takes).sum(1)
        weight = np.where(free, prio, 0.0).sum(1)
        scale = np.divide(left, weight, out=np.zeros_like(left), where=weight > 0)
        trial = np.where(free, scale[:, None] * prio, takes)
        over = free & (trial > cap)
        takes = np.where(over, cap, trial)
        if not over.any():
            break
        free &= ~over
    return takes


def capped_supply(avail: np.ndarray, requested: np.ndarray, k: int) -> np.ndarray:
    """C_h: the bucket-h candidates the pairs hold, at most K per pair (requested buckets only)."""
    return (np.minimum(avail, k) * (requested > 0)).sum(0, dtype=np.float64)


def global_plan(avail: np.ndarray, requested: np.ndarray, k: int, weights: np.ndarray,
                supply: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Pair draw weights (P,) and expected takes (P, 9) of global mode for bucket weights w_h
    (`supply`: C_h of the whole index when `avail` holds only some of its rows)."""
    cap = np.minimum(avail, k).astype(np.float64)
    cap[:, requested <= 0] = 0
    supply = cap.sum(0) if supply is None else supply
    prio = cap * np.divide(weights, supply, out=np.zeros(9), where=supply > 0)
    takes = _water_fill(prio, cap, np.minimum(cap.sum(1), k))
    # A pair whose requested buckets cannot fill K passes the rest down the fallback chain, from
    # the hardest requested bucket (the per-pair rule; only curricula without bucket 1 get here).
    left = k - takes.sum(1)
    left[left < 1e-9] = 0
    top = int(np.nonzero(requested)[0].max())
    for h in range(top, 0, -1):
        got = left if h == 1 else np.minimum(left, avail[:, h] - takes[:, h])
        takes[:, h] += got
        left = left - got
    return prio.sum(1), takes


def expected_mix(pair_weights: np.ndarray, takes: np.ndarray, k: int) -> np.ndarray:
    total = pair_weights.sum()
    return pair_weights @ takes / (k * total) if total > 0 else np.zeros(takes.shape[1])


def distinct_rows(avail: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The distinct rows of min(avail, K) (a plan depends on nothing else), the row of each pair
    and how many pairs share each row."""
    capped = np.minimum(avail, k).astype(np.int64)
    if (k + 1) ** capped.shape[1] < 2 ** 62:   # one int64 key per row: far faster than unique(axis=0)
        keys = capped @ ((k + 1) ** np.arange(capped.shape[1], dtype=np.int64))
        _, first, inverse, count = np.unique(keys, return_index=True, return_inverse=True, return_counts=True)
        return capped[first], inverse, count
    rows, inverse, count = np.unique(capped, axis=0, return_inverse=True, return_counts=True)
    return rows, inverse.ravel(), count


def fit_bucket_weights(avail: np.ndarray, requested: np.ndarray, k: int,
                       iterations: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """Bucket weights w (9,) whose global plan's expected mix is the request (or as near as the
    candidates allow), and that mix. Multiplicative fixed point on the distinct capped rows."""
    rows, _, count = distinct_rows(avail, k)
    supply = capped_supply(avail, requested, k)
    has = supply > 0
    weights = np.where(has, requested, 0.0)
    weights /= weights.sum()

    def mix_of(weights):
        w, takes = global_plan(rows, requested, k, weights, supply)
        return expected_mix(w * count, takes, k)

    mix = mix_of(weights)
    for _ in range(iterations):
        if np.abs(np.where(has, mix - requested, 0)).max() < FIT_TOLERANCE:
            break
        ratio = np.divide(requested, mix, out=np.ones(9), where=mix > 0)
        weights = np.where(has, weights * ratio, 0.0)
        # A bucket that no weighting can fill keeps squeezing the others: floor them (finite arithmetic).
        weights = np.where(has, np.maximum(weights / weights.sum(), 1e-12 * requested), 0.0)
        weights /= weights.sum()
        mix = mix_of(weights)
    return weights, mix


def cumulative_bounds(takes: np.ndarray, avail: np.ndarray, k: int) -> np.ndarray:
    """(P, 9) int64: 0, then the running sum of the takes of h = 8, 7, ..., 1 in 1/UNIT, ending at
    K * UNIT. A row offset u in [0, UNIT) rounds them: bucket h gets floor or ceil of its take, never
    more than it holds, the row K in all (largest remainder keeps each bucket within its ceiling)."""
    exact = takes[:, :0:-1] * UNIT                      # h = 8..1
    units = np.floor(exact + 1e-6).astype(np.int64)     # snap float noise below a whole unit
    cap = np.maximum(avail[:, :0:-1], np.ceil(takes[:, :0:-1] - 1e-9)).astype(np.int64) * UNIT
    units = np.minimum(units, cap)
    deficit = k * UNIT - units.sum(1)
    if deficit.min() < 0 or deficit.max() > units.shape[1]:
        raise SamplingError(f"takes do not sum to K={k} (deficit {deficit.min()}..{deficit.max()})")
    order = np.argsort(-(exact - units) + (units >= cap) * 2, axis=1, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(units.shape[1])[None, :].repeat(len(units), 0), axis=1)
    units += rank < deficit[:, None]
    return np.concatenate([np.zeros((len(units), 1), np.int64), np.cumsum(units, axis=1)], axis=1)


def epoch_weights_fixed(weights: np.ndarray) -> np.ndarray:
    """Cumulative pair weights in 1/PAIR_UNIT of a draw: an epoch of n draws is the ticks
    u + i * PAIR_UNIT (i < n), each landing on one pair (systematic sampling)."""
    n = len(weights)
    running = np.cumsum(weights, dtype=np.float64)
    if running[-1] <= 0:
        raise SamplingError("no pair can supply any requested bucket")
    cum = np.round(running / running[-1] * (n * PAIR_UNIT)).astype(np.int64)
    cum[-1] = n * PAIR_UNIT
    return cum

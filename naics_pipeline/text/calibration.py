"""Confidence a user can act on: level probabilities, back-off to the deepest confident level,
expected calibration error and coverage at a precision.

The classifier's 6-digit probabilities are fitted to be calibrated (text.fusion on the validation
split). A 4-digit industry group's probability is the sum of its 6-digit codes', a sector's the sum
of its groups'. `back_off` gives a text the deepest level (6, then 4, then 2 digits) whose best
probability reaches the asked precision P: if the probabilities mean what they say, the texts given
a code at P are right at least a share P of the time, and the rest go to a person.

That rule asks every accepted text to reach P, so the accepted set is right more often than P (97-98%
at 95%). With `PrecisionCuts` (fitted on the validation split's out-of-fold probabilities) a level
also accepts from the lowest confidence at which the validation texts it would accept were right P of
the time, with a Wilson margin: the cut of a level is min(P, that confidence)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LEVELS = (6, 4, 2)
ECE_BINS = 15
WILSON_Z = 1.645     # one-sided 95%: a cut's validation precision must reach P by this lower bound


class LevelMap:
    """Each 6-digit candidate's ancestor at 4 and 2 digits, as positions into `codes[level]`."""

    def __init__(self, six: list[str], ancestors: dict[int, dict[str, str]]):
        self.codes = {6: np.array(six, dtype=object)}
        self.member = {6: np.arange(len(six))}
        for level in (4, 2):
            up = [ancestors[level][c] for c in six]
            uniq = sorted(set(up))
            pos = {c: i for i, c in enumerate(uniq)}
            self.codes[level] = np.array(uniq, dtype=object)
            self.member[level] = np.array([pos[c] for c in up], np.int64)
        # (C6, C_level) 0/1: a product sums the 6-digit probabilities under each ancestor
        self.onehot = {lv: np.eye(len(self.codes[lv]), dtype=np.float32)[self.member[lv]] for lv in (4, 2)}

    def probabilities(self, p6: np.ndarray, level: int) -> np.ndarray:
        """(Q, C6) -> (Q, C_level): summed over each ancestor's 6-digit codes."""
        if level == 6:
            return p6
        return p6 @ self.onehot[level].astype(p6.dtype)

    def truth(self, true6: np.ndarray, level: int) -> np.ndarray:
        """(Q,) positions of the true 6-digit candidates -> their ancestors' positions at `level`."""
        return self.member[level][true6]


def back_off(p6: np.ndarray, levels: LevelMap, min_precision: float,
             cuts: dict | None = None) -> list[tuple[int, int, float] | None]:
    """Per text: (level, position of the code among that level's codes, its probability) of the deepest
    level whose best probability is >= that level's cut (`cuts`: PrecisionCuts.cuts, a cut per level,
    or a (Q,) array of cuts per level; None: min_precision at every level), or None."""
    best = {}
    for level in LEVELS:
        p = levels.probabilities(p6, level)
        arg = p.argmax(1)
        best[level] = (arg, p[np.arange(len(p)), arg])
    return choose_level(best, min_precision, cuts)


def choose_level(best: dict[int, tuple[np.ndarray, np.ndarray]], min_precision: float,
                 cuts: dict | None = None):
    """{level: ((Q,) best position, (Q,) its probability)} -> back_off's list."""
    out: list[tuple[int, int, float] | None] = [None] * len(best[6][0])
    for level in reversed(LEVELS):            # shallow first, deeper levels overwrite
        arg, conf = best[level]
        for i in np.nonzero(conf >= (min_precision if cuts is None else cuts[level]))[0]:
            out[i] = (level, int(arg[i]), float(conf[i]))
    return out


def wilson_lower(hits: np.ndarray, n: np.ndarray, z: float = WILSON_Z) -> np.ndarray:
    """The Wilson score lower bound of hits / n."""
    n = np.asarray(n, float)
    p = np.asarray(hits, float) / n
    centre = p + z * z / (2 * n)
    spread = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre - spread) / (1 + z * z / n)


def precision_cut(confidence: np.ndarray, right: np.ndarray, precision: float) -> float:
    """The lowest confidence t such that the texts at or above t were right at least `precision` of the
    time by the Wilson lower bound (inf when no t is)."""
    order = np.argsort(-confidence, kind="stable")
    conf = confidence[order]
    ends = np.r_[conf[1:] < conf[:-1], True]          # a cut takes every text tied at its confidence
    ok = ends & (wilson_lower(np.cumsum(right[order]), np.arange(1, len(conf) + 1)) >= precision)
    return float(conf[np.nonzero(ok)[0][-1]]) if ok.any() else float("inf")


@dataclass
class PrecisionCuts:
    """Validation texts' best probability at each level and whether that code was right (out of fold),
    from which each asked precision gets its cut per level, fitted in back-off order: 6 digits on every
    text, 4 digits on the texts not coded at 6, 2 digits on the rest."""
    confidence: dict[int, np.ndarray]
    right: dict[int, np.ndarray]

    @classmethod
    def fit(cls, p6: np.ndarray, true6: np.ndarray, levels: LevelMap) -> PrecisionCuts:
        conf, right = {}, {}
        for level in LEVELS:
            p = levels.probabilities(p6, level)
            conf[level] = p.max(1).astype(np.float64)
            right[level] = p.argmax(1) == levels.truth(true6, level)
        return cls(conf, right)

    def cuts(self, precision: float) -> dict[int, float]:
        """{level: the confidence from which that level answers} for an asked precision."""
        left = np.ones(len(self.confidence[6]), bool)
        out = {}
        for level in LEVELS:
            out[level] = min(precision, precision_cut(self.confidence[level][left], self.right[level][left], precision))
            left &= self.confidence[level] < out[level]
        return out

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {**{f"cuts_confidence_{lv}": self.confidence[lv] for lv in LEVELS},
                **{f"cuts_right_{lv}": self.right[lv] for lv in LEVELS}}

    @classmethod
    def from_arrays(cls, z) -> PrecisionCuts | None:
        if "cuts_confidence_6" not in z:
            return None
        return cls({lv: z[f"cuts_confidence_{lv}"] for lv in LEVELS}, {lv: z[f"cuts_right_{lv}"] for lv in LEVELS})


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> float:
    """Sum over equal-width confidence bins of |accuracy - mean confidence| x the bin's share."""
    confidence, correct = np.asarray(confidence, float), np.asarray(correct, float)
    if not len(confidence):
        return float("nan")
    edges = np.minimum((confidence * bins).astype(int), bins - 1)
    ece = 0.0
    for b in range(bins):
        inside = edges == b
        if inside.any():
            ece += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return float(ece)


def calibration_report(p6: np.ndarray, true6: np.ndarray, levels: LevelMap,
                       precisions=(0.90, 0.95, 0.99), cuts=None) -> dict:
    """ECE of the top code at each level, and for each precision P: the share of texts given a 6-digit
    code (coverage) and how often it is right, then the same with back-off (any level). `cuts`: P ->
    back_off's cuts, {level: a cut, or (Q,) cuts per text (e.g. one fitted per fold)} (None, or a
    None answer: P at every level, the calibrated rule)."""
    out = {}
    for level in LEVELS:
        p = levels.probabilities(p6, level)
        best = p.argmax(1)
        correct = best == levels.truth(true6, level)
        out[f"ece_{level}digit"] = expected_calibration_error(p[np.arange(len(p)), best], correct)
        out[f"top1_{level}digit"] = float(correct.mean()) if len(correct) else float("nan")
    for prec in precisions:
        chosen = back_off(p6, levels, prec, None if cuts is None else cuts(prec))
        right = p6.argmax(1) == true6
        take = np.array([c is not None and c[0] == 6 for c in chosen], bool)
        key = f"{round(prec * 100)}"
        out[f"coverage6_at_{key}"] = float(take.mean())
        out[f"precision6_at_{key}"] = float(right[take].mean()) if take.any() else float("nan")
        hits = [levels.truth(true6[i:i + 1], c[0])[0] == c[1] for i, c in enumerate(chosen) if c is not None]
        out[f"coverage_backoff_at_{key}"] = float(sum(c is not None for c in chosen) / max(len(chosen), 1))
        out[f"precision_backoff_at_{key}"] = float(np.mean(hits)) if hits else float("nan")
        out[f"backoff_levels_at_{key}"] = {lv: int(sum(1 for c in chosen if c is not None and c[0] == lv))
                                           for lv in LEVELS}
    return out


"""Confidence a user can act on: level probabilities, back-off to the deepest confident level,
expected calibration error and coverage at a precision.

The classifier's 6-digit probabilities are fitted to be calibrated (text.fusion on the validation
split). A 4-digit industry group's probability is the sum of its 6-digit codes', a sector's the sum
of its groups'. `back_off` gives a text the deepest level (6, then 4, then 2 digits) whose best
probability reaches the asked precision P: if the probabilities mean what they say, the texts given
a code at P are right at least a share P of the time, and the rest go to a person."""
from __future__ import annotations

import numpy as np

LEVELS = (6, 4, 2)
ECE_BINS = 15


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


def back_off(p6: np.ndarray, levels: LevelMap, min_precision: float) -> list[tuple[int, int, float] | None]:
    """Per text: (level, position of the code among that level's codes, its probability) of the deepest
    level whose best probability is >= min_precision, or None."""
    best = {}
    for level in LEVELS:
        p = levels.probabilities(p6, level)
        arg = p.argmax(1)
        best[level] = (arg, p[np.arange(len(p)), arg])
    return choose_level(best, min_precision)


def choose_level(best: dict[int, tuple[np.ndarray, np.ndarray]], min_precision: float):
    """{level: ((Q,) best position, (Q,) its probability)} -> back_off's list."""
    out: list[tuple[int, int, float] | None] = [None] * len(best[6][0])
    for level in reversed(LEVELS):            # shallow first, deeper levels overwrite
        arg, conf = best[level]
        for i in np.nonzero(conf >= min_precision)[0]:
            out[i] = (level, int(arg[i]), float(conf[i]))
    return out


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
                       precisions=(0.90, 0.95, 0.99)) -> dict:
    """ECE of the top code at each level, and for each precision P: the share of texts given a 6-digit
    code (coverage) and how often it is right, then the same with back-off (any level)."""
    out = {}
    for level in LEVELS:
        p = levels.probabilities(p6, level)
        best = p.argmax(1)
        correct = best == levels.truth(true6, level)
        out[f"ece_{level}digit"] = expected_calibration_error(p[np.arange(len(p)), best], correct)
        out[f"top1_{level}digit"] = float(correct.mean()) if len(correct) else float("nan")
    for prec in precisions:
        conf6 = p6.max(1)
        take = conf6 >= prec
        right = p6.argmax(1) == true6
        key = f"{round(prec * 100)}"
        out[f"coverage6_at_{key}"] = float(take.mean())
        out[f"precision6_at_{key}"] = float(right[take].mean()) if take.any() else float("nan")
        chosen = back_off(p6, levels, prec)
        hits = [levels.truth(true6[i:i + 1], c[0])[0] == c[1] for i, c in enumerate(chosen) if c is not None]
        out[f"coverage_backoff_at_{key}"] = float(sum(c is not None for c in chosen) / max(len(chosen), 1))
        out[f"precision_backoff_at_{key}"] = float(np.mean(hits)) if hits else float("nan")
        out[f"backoff_levels_at_{key}"] = {lv: int(sum(1 for c in chosen if c is not None and c[0] == lv))
                                           for lv in LEVELS}
    return out

"""The validation split carved from the kept index entries: what every fusion weight, temperature and
threshold of the classifier is fitted on.

About VALIDATION_SHARE of each 6-digit code's kept entries, chosen by a hash of (code, entry), so the
split is the same on every machine and a source change moves only the entries it touches. A code keeps
at least two entries for training (codes with fewer than three give none). The validation entries are
withheld from every part of the model that could learn them: the `examples` channel the code points are
computed from (text_embeddings) and the text-alignment stage's training texts. At inference the entry
index holds them again (text.index)."""
from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa

VALIDATION_SHARE = 0.15
MIN_KEPT = 2          # entries of a code that always stay on the training side
SEPARATOR = "; "      # naics_descriptions.examples joins the kept entries with it


def _rank_key(code: str, text: str) -> str:
    return hashlib.blake2b(f"{code}\x1f{text}".encode(), digest_size=8).hexdigest()


def validation_mask(texts: list[str], codes: list[str], share: float = VALIDATION_SHARE) -> np.ndarray:
    """Bool per (text, code) row: True for the validation rows, round(share x n) of each code's n rows
    (never more than n - MIN_KEPT), those with the smallest hash of (code, text)."""
    mask = np.zeros(len(texts), bool)
    by_code: dict[str, list[int]] = {}
    for i, c in enumerate(codes):
        by_code.setdefault(c, []).append(i)
    for c, rows in by_code.items():
        take = min(int(round(share * len(rows))), len(rows) - MIN_KEPT)
        if take > 0:
            rows = sorted(rows, key=lambda i: _rank_key(c, texts[i]))
            mask[rows[:take]] = True
    return mask


def kept_entries(descriptions: pa.Table) -> tuple[list[str], list[str]]:
    """(entries, codes): every kept index entry of a 6-digit code, in naics_descriptions order."""
    texts, codes = [], []
    for code, level, examples in zip(descriptions.column("code").to_pylist(), descriptions.column("level").to_pylist(),
                                     descriptions.column("examples").to_pylist()):
        if level != 6:
            continue
        for entry in (examples or "").split(SEPARATOR):
            if entry.strip():
                texts.append(entry.strip())
                codes.append(code)
    return texts, codes


def validation_entries(descriptions: pa.Table) -> set[tuple[str, str]]:
    """The (code, entry) pairs of the validation split."""
    texts, codes = kept_entries(descriptions)
    mask = validation_mask(texts, codes)
    return {(c, t) for t, c, m in zip(texts, codes, mask) if m}


def without_validation(descriptions: pa.Table) -> pa.Table:
    """naics_descriptions with the validation entries taken out of `examples` (what the model may see)."""
    withheld = validation_entries(descriptions)
    if not withheld:
        return descriptions
    out = []
    for code, examples in zip(descriptions.column("code").to_pylist(), descriptions.column("examples").to_pylist()):
        if examples:
            kept = [e for e in examples.split(SEPARATOR) if (code, e.strip()) not in withheld]
            examples = SEPARATOR.join(kept) if kept else None
        out.append(examples)
    i = descriptions.schema.get_field_index("examples")
    return descriptions.set_column(i, "examples", pa.array(out, pa.string()))

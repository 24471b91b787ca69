from pathlib import Path

import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest

from naics_pipeline.curricula.config import parse_curriculum
from naics_pipeline.curricula.sampling import Sampler, SamplingError, SamplingIndex, build_index, simulate_epoch
from naics_pipeline.data import pipeline
from naics_pipeline.data.triplets import triplets_sql
from naics_pipeline.layout import Layout
from tests.census_fixtures import synthetic_codes, write_census_folder


def build_tables(tmp_path: Path, **census) -> Layout:
    folder = write_census_folder(tmp_path / "census", **census)
    layout = Layout(tmp_path / "store")
    pipeline.build_data(layout, str(folder))
    return layout


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Layout:
    return build_tables(tmp_path_factory.mktemp("syn"), codes=synthetic_codes(), index={})


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Layout:
    return build_tables(tmp_path_factory.mktemp("small"))


def curriculum(**kw):
    base = {"name": "t", "positive_levels": [2, 3, 4, 5, 6], "difficulty_buckets": [1, 2, 3, 4, 5, 6, 7, 8],
            "bucket_percentages": {h: 0.125 for h in range(1, 9)}, "k_negatives": 8}
    return parse_curriculum({**base, **kw})


def make_index(layout, c, name="idx", seed=0):
    target = layout.root / name
    build_index(c, pq.read_table(layout.descriptions), layout.distances, layout.triplets, target, seed=seed)
    return SamplingIndex(target)


def expand(index: SamplingIndex):
    """Every (anchor, positive, negative, hardness) the index can yield (before exclusion redraws)."""
    out = set()
    for pid in range(len(index)):
        a, p = int(index.anchor[pid]), int(index.positive[pid])
        excl = {int(n) for n in range(index.n_codes)
                if index.excluded(np.array([p]), np.array([n]))[0]}
        off = index.group_offsets[index.group[pid]]
        for h in range(2, 8):
            for n in index.group_negatives[off[h - 2]:off[h - 1]]:
                if int(n) not in excl:
                    out.add((a, p, int(n), h))
        for n in index.pair_exclusions[index.x8_start[pid]:index.x8_start[pid] + index.x8_count[pid]]:
            out.add((a, p, int(n), 8))
    return out


def test_index_candidates_equal_triplet_table(small):
    index = make_index(small, curriculum())
    table = triplets_sql(small.triplets)   # the triplet table as users read it
    rows = duckdb.sql(f"SELECT anchor, positive, negative, hardness FROM ({table}) WHERE hardness > 1").fetchall()
    links = {(int(a), int(b)) for a, b in zip(index.exclusions["code"], index.exclusions["excluded"])}
    links |= {(b, a) for a, b in links}
    # The index is the triplet table minus the triplets whose positive is an exclusion link.
    kept = {tuple(int(v) for v in r) for r in rows if (int(r[0]), int(r[1])) not in links}
    assert len(kept) < len(rows)
    assert expand(index) == kept
    assert not links & set(zip(index.anchor.tolist(), index.positive.tolist()))
    h1 = duckdb.sql(f"SELECT count(*) FROM ({table}) WHERE hardness = 1").fetchall()[0][0]
    sampler = Sampler(index, batch_size=7, seed=1)
    seen = set()
    for _ in range(30):
        for batch in sampler.epoch(_):
            for a, p, negs, hs in zip(batch.anchor, batch.positive, batch.negatives, batch.hardness):
                seen.update((int(a), int(p), int(n), int(h)) for n, h in zip(negs, hs) if h == 1)
    rows1 = {tuple(int(v) for v in r) for r in duckdb.sql(
        f"SELECT anchor, positive, negative, hardness FROM ({table}) WHERE hardness = 1").fetchall()}
    assert seen <= rows1 and len(rows1) == h1   # every sampled unrelated negative is a real hardness-1 triplet


def test_pair_filters_and_max_positives(synthetic):
    c = curriculum(positive_levels=[6], positive_distance_min=0.5, positive_distance_max=2.0, max_positives=1)
    index = make_index(synthetic, c)
    desc = pq.read_table(synthetic.descriptions).to_pylist()
    assert all(desc[p]["level"] == 6 for p in index.positive)
    assert np.bincount(index.anchor).max() == 1
    d = {(r["a"], r["b"]): r["distance"] for r in pq.read_table(synthetic.distances).to_pylist()}
    assert all(0.5 < d[a, p] <= 2.0 for a, p in zip(index.anchor, index.positive))
    unlimited = make_index(synthetic, curriculum(positive_levels=[6], positive_distance_min=0.5,
                                                 positive_distance_max=2.0), "u")
    assert len(unlimited) > len(index) == len(set(unlimited.anchor))


def test_realized_mix_matches_when_plentiful(synthetic):
    c = curriculum(positive_levels=[6], positive_distance_max=2.0, difficulty_buckets=[1, 2],
                   bucket_percentages={1: 0.875, 2: 0.125}, k_negatives=16)
    sim = simulate_epoch(make_index(synthetic, c))
    assert sim["fallback_pairs"][2] == 0
    assert sim["realized"][1] == pytest.approx(0.875, abs=1e-9)
    assert sim["realized"][2] == pytest.approx(0.125, abs=1e-9)


def test_fallback_to_easier_levels_when_short(synthetic):
    c = curriculum(positive_levels=[6], positive_distance_max=2.0, difficulty_buckets=[7],
                   bucket_percentages={7: 1.0}, k_negatives=8)
    index = make_index(synthetic, c)
    sim = simulate_epoch(index)
    avail = index.available(np.arange(len(index)))
    short = avail[:, 7] < 8
    assert 0 < sim["fallback_pairs"][7] == short.sum()
    assert sim["realized"][7] == pytest.approx(np.minimum(avail[:, 7], 8).sum() / (8 * len(index)))
    # the shortfall of 7 goes to 6 first, as far as 6 has candidates
    want6 = 8 - np.minimum(avail[:, 7], 8)
    assert sim["negatives"][6] == np.minimum(want6, avail[:, 6]).sum()
    assert sum(sim["realized"].values()) == pytest.approx(1)


def test_sampler_deterministic_distinct_and_complete(synthetic):
    index = make_index(synthetic, curriculum(positive_levels=[5, 6], k_negatives=16))
    a = [b.negatives for b in Sampler(index, batch_size=64, seed=3).epoch(2)]
    b = [b.negatives for b in Sampler(index, batch_size=64, seed=3).epoch(2)]
    c = [b.negatives for b in Sampler(index, batch_size=64, seed=3).epoch(3)]
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))
    anchors = np.concatenate([bt.anchor for bt in Sampler(index, batch_size=64, seed=3).epoch(0)])
    assert len(anchors) == len(index)
    for batch in Sampler(index, batch_size=64, seed=3).epoch(0):
        assert batch.negatives.shape == (len(batch.anchor), 16)
        for negs, a_, p_ in zip(batch.negatives, batch.anchor, batch.positive):
            assert len(set(negs.tolist())) == 16 and a_ not in negs and p_ not in negs


def test_excluded_draws_are_labelled_8(small):
    index = make_index(small, curriculum(difficulty_buckets=[1], bucket_percentages={1: 1.0}, k_negatives=30))
    desc = pq.read_table(small.descriptions).to_pylist()
    excl = {r["index"]: {c for c in r["excluded_codes"]} for r in desc}
    codes = [r["code"] for r in desc]
    for batch in Sampler(index, batch_size=16, seed=0).epoch(0):
        for a, p, negs, hs in zip(batch.anchor, batch.positive, batch.negatives, batch.hardness):
            for n, h in zip(negs, hs):
                assert (h == 8) == (codes[n] in excl[a] | excl[p])


def test_empty_filter_is_a_clear_error(small):
    with pytest.raises(SamplingError, match="no .anchor, positive. pair passes"):
        make_index(small, curriculum(positive_distance_min=9.0))

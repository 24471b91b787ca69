import json
import random
from pathlib import Path

import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest

from naics_pipeline.curricula.config import parse_curriculum
from naics_pipeline.curricula.index_builder import build_index
from naics_pipeline.curricula.mix_plan import MIX_TOLERANCE, UNIT, SamplingError, cumulative_bounds, fallback_takes
from naics_pipeline.curricula.mix_report import simulate_epoch
from naics_pipeline.curricula.sampler import Sampler
from naics_pipeline.curricula.sampling_index import HARDNESS, SamplingIndex
from naics_pipeline.data import pipeline
from naics_pipeline.data.descriptions import is_lineal
from naics_pipeline.data.triplets import triplets_sql
from naics_pipeline.layout import Layout
from tests.census_fixtures import synthetic_codes, write_census_folder


def build_tables(tmp_path: Path, **census) -> Layout:
    folder = write_census_folder(tmp_path / "census", **census)
    layout = Layout(tmp_path / "store")
    pipeline.build_data(layout, str(folder))
    return layout


def dense_cross_references(codes, per_code=3, seed=7):
    """Every 5- and 6-digit code excludes a few non-lineal codes (in its sector and others)."""
    rng = random.Random(seed)
    names = [c for c, _ in codes]
    out = []
    for c in names:
        if len(c) >= 5:
            targets = rng.sample([n for n in names if len(n) >= 4 and not is_lineal(n, c)], per_code)
            out.append((c, "Establishments primarily engaged in other work are classified in "
                           + ", ".join(f"Industry {t}" for t in targets) + "."))
    return out


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Layout:
    return build_tables(tmp_path_factory.mktemp("syn"), codes=synthetic_codes(), index={})


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Layout:
    return build_tables(tmp_path_factory.mktemp("small"))


@pytest.fixture(scope="module")
def dense(tmp_path_factory) -> Layout:
    """Small buckets and many exclusions: strata of one or two candidates, often excluded ones."""
    codes = synthetic_codes(fanout=2)
    return build_tables(tmp_path_factory.mktemp("dense"), codes=codes, index={},
                        cross_references=dense_cross_references(codes))


def curriculum(**kw):
    base = {"name": "t", "positive_levels": [2, 3, 4, 5, 6], "difficulty_buckets": [1, 2, 3, 4, 5, 6, 7, 8],
            "bucket_percentages": {h: 0.125 for h in range(1, 9)}, "k_negatives": 8}
    return parse_curriculum({**base, **kw})


def make_index(layout, c, name="idx", seed=0):
    target = layout.root / name
    build_index(c, pq.read_table(layout.descriptions), layout.distances, layout.triplets, target, seed=seed)
    return SamplingIndex(target)


def expand(index: SamplingIndex) -> set:
    """Every (anchor, positive, negative, hardness) the index can yield, through the sampler's mapping."""
    out = set()
    for h in HARDNESS:
        n = index.avail[:, h].astype(np.int64)
        pids = np.repeat(np.arange(len(index)), n)
        pos = np.arange(len(pids)) - np.repeat(np.cumsum(n) - n, n)
        hs = np.full(len(pids), h)
        negatives = index.resolve(pids, hs, index.positions(pids, hs, pos))
        out.update(zip(index.anchor[pids].tolist(), index.positive[pids].tolist(), negatives.tolist(), hs.tolist()))
    return out


def rows_of(batch) -> set:
    k = batch.negatives.shape[1]
    return set(zip(np.repeat(batch.anchor, k).tolist(), np.repeat(batch.positive, k).tolist(),
                   batch.negatives.ravel().tolist(), batch.hardness.ravel().astype(int).tolist()))


def triplet_rows(layout: Layout) -> set:
    table = triplets_sql(layout.triplets)   # the triplet table as users read it (hardness 1 is a view)
    return {tuple(int(v) for v in r) for r in duckdb.sql(
        f"SELECT anchor, positive, negative, hardness FROM ({table})").fetchall()}


@pytest.mark.parametrize("fixture", ["small", "dense"])
def test_candidate_sets_equal_triplet_table(fixture, request):
    layout = request.getfixturevalue(fixture)
    index = make_index(layout, curriculum())
    rows = triplet_rows(layout)
    links = {(int(a), int(b)) for a, b in zip(index.exclusions["code"], index.exclusions["excluded"])}
    links |= {(b, a) for a, b in links}
    # The index is the triplet table (every hardness, 1 included) minus the triplets whose positive is an
    # exclusion link; each candidate appears in exactly one bucket, the excluded codes only in bucket 8.
    kept = {r for r in rows if (r[0], r[1]) not in links}
    assert len(kept) < len(rows)
    got = expand(index)
    assert got == kept
    assert len({r[:3] for r in got}) == len(got)
    assert not links & set(zip(index.anchor.tolist(), index.positive.tolist()))
    assert index.candidate_totals() == {h: sum(1 for r in kept if r[3] == h) for h in HARDNESS}


def test_sampled_negatives_are_candidates_of_their_bucket(dense):
    index = make_index(dense, curriculum(k_negatives=16))
    allowed = expand(index)
    for batch in Sampler(index, batch_size=50, seed=1).epoch(0):
        assert rows_of(batch) <= allowed
    # the per-pair candidate lists agree with the sampler's batch mapping
    pid = int(np.argmax(index.skip_count[:, 1]))
    pair = (index.anchor[pid], index.positive[pid])
    assert set(index.candidates(pid, 1).tolist()) == {r[2] for r in allowed if r[:2] == pair and r[3] == 1}


@pytest.mark.parametrize("mix", ["per_pair", "global"])
def test_negatives_are_distinct(dense, mix):
    # Strata of one or two candidates, a third of the codes excluding something: with redraws from the
    # whole bucket (before index version 3) hundreds of rows here held a negative twice.
    index = make_index(dense, curriculum(k_negatives=16, mix=mix), mix)
    assert index.meta["stats"]["skipped_candidates"] > 1000
    rows = 0
    for epoch in range(5):
        for batch in Sampler(index, batch_size=64, seed=epoch).epoch(epoch):
            ordered = np.sort(batch.negatives, axis=1)
            duplicated = (ordered[:, 1:] == ordered[:, :-1]).any(axis=1)
            assert not duplicated.any(), batch.negatives[duplicated][:3]
            assert not (batch.negatives == batch.anchor[:, None]).any()
            assert not (batch.negatives == batch.positive[:, None]).any()
            rows += len(ordered)
    assert rows == 5 * len(index)


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
    meta = make_index(synthetic, c).meta
    assert meta["mix"] == "per_pair" and meta["shortfalls"] == {}
    assert meta["requested_mix"] == {"1": 0.875, "2": 0.125}
    assert meta["realized_mix"] == {"1": 0.875, "2": 0.125}


def test_fallback_to_easier_levels_when_short(synthetic):
    c = curriculum(positive_levels=[6], positive_distance_max=2.0, difficulty_buckets=[7],
                   bucket_percentages={7: 1.0}, k_negatives=8)
    index = make_index(synthetic, c)
    avail = index.available(np.arange(len(index)))
    short = avail[:, 7] < 8
    shortfall = index.meta["shortfalls"]["7"]
    assert 0 < shortfall["pairs_short"] == short.sum()
    assert shortfall["candidates"] == avail[:, 7].sum()
    realized = {int(h): v for h, v in index.meta["realized_mix"].items()}
    assert realized[7] == pytest.approx(np.minimum(avail[:, 7], 8).sum() / (8 * len(index)), abs=1e-6)
    # the shortfall of 7 goes to 6 first, as far as 6 has candidates
    want6 = 8 - np.minimum(avail[:, 7], 8)
    assert shortfall["went_to"]["6"] == np.minimum(want6, avail[:, 6]).sum()
    assert sum(shortfall["went_to"].values()) == shortfall["negatives_short"]
    assert sum(realized.values()) == pytest.approx(1)


def test_shortfall_flows_add_up(dense):
    index = make_index(dense, curriculum(k_negatives=16))
    meta = index.meta
    takes = fallback_takes(index.allocation, index.available(np.arange(len(index))))
    negatives = {int(h): n for h, n in meta["realized_negatives"].items()}
    assert negatives == {h: int(takes[:, h].sum()) for h in HARDNESS if takes[:, h].sum()}
    received = {h: 0 for h in HARDNESS}
    for origin, s in meta["shortfalls"].items():
        assert sum(s["went_to"].values()) == s["negatives_short"] > 0
        assert all(int(h) < int(origin) for h in s["went_to"])
        for h, n in s["went_to"].items():
            received[int(h)] += n
    lost = {int(h): s["negatives_short"] for h, s in meta["shortfalls"].items()}
    for h in HARDNESS:   # each bucket draws its allocation, minus what it lacked, plus what it received
        assert negatives.get(h, 0) == index.allocation[h] * len(index) - lost.get(h, 0) + received[h]


def test_global_mix_within_two_points_where_per_pair_drifts(dense):
    shares = {1: 0.4, 2: 0.2, 3: 0.1, 4: 0.1, 5: 0.1, 6: 0.05, 8: 0.05}
    c = dict(difficulty_buckets=list(shares), bucket_percentages=shares, k_negatives=16)
    per_pair = make_index(dense, curriculum(**c), "pp").meta
    glob = make_index(dense, curriculum(**c, mix="global"), "gl").meta
    assert per_pair["mix"] == "per_pair" and glob["mix"] == "global"
    assert per_pair["realized_mix"]["1"] > 0.45 and per_pair["shortfalls"]
    assert glob["shortfalls"] == {}
    assert glob["requested_mix"] == {str(h): v for h, v in shares.items()}
    for h, share in shares.items():
        assert glob["realized_mix"][str(h)] == pytest.approx(share, abs=MIX_TOLERANCE)
    shift = glob["positive_shift"]
    assert 0 < shift["pairs_drawn_share"] < 1 and shift["max_draws_per_pair"] > 1
    assert sum(shift["positive_distance"]["global"].values()) == pytest.approx(1, abs=1e-5)
    assert shift["positive_distance"]["global"] != shift["positive_distance"]["per_pair"]
    assert glob["epoch_draws"] == per_pair["epoch_draws"] == len(SamplingIndex(dense.root / "gl"))


def test_global_shortfall_when_no_pair_weights_can_fill_a_bucket(dense):
    # Bucket 7 holds a few candidates per pair at most: no weighting reaches 60% of the negatives.
    index = make_index(dense, curriculum(difficulty_buckets=[1, 7], bucket_percentages={1: 0.4, 7: 0.6},
                                         k_negatives=16, mix="global"))
    short = index.meta["shortfalls"]["7"]
    reachable = index.available(np.arange(len(index)))[:, 7].max() / 16
    assert short["achievable"] <= reachable + 1e-9 < 0.6 == short["requested"]
    assert short["negatives_short"] > 0 and set(short["went_to"]) == {"1"}
    assert index.meta["realized_mix"]["7"] == pytest.approx(short["achievable"], abs=MIX_TOLERANCE)


def test_global_epoch_draws_follow_pair_weights(dense):
    index = make_index(dense, curriculum(k_negatives=16, mix="global"))
    weights, takes, _ = index.plan("global")
    sampler = Sampler(index, batch_size=32, seed=4)
    for epoch in range(3):
        order = sampler.epoch_order(np.random.default_rng([4, epoch]))
        assert len(order) == len(index)
        draws = np.bincount(order, minlength=len(index))
        expected = weights / weights.sum() * len(index)
        assert (draws >= np.floor(expected - 1e-6)).all() and (draws <= np.ceil(expected + 1e-6)).all()


def test_rounded_takes_stay_within_candidates_and_sum_to_k():
    rng = np.random.default_rng(0)
    k = 16
    avail = rng.integers(0, 6, size=(400, 9))
    avail[:, 1] = 40
    avail[:, 0] = 0
    raw = rng.random((400, 9)) * (avail > 0) * avail
    raw[:, 0] = 0
    raw[:, 1] = 0
    takes = np.minimum(raw, avail).astype(np.float64)
    takes[:, 1] = k - takes.sum(1)          # bucket 1 holds the rest (it has 40)
    bounds = cumulative_bounds(takes, avail, k)
    for u in (0, 1, UNIT // 3, UNIT - 1):
        counts = np.diff(-((u - bounds) // UNIT), axis=1)[:, ::-1]   # h = 1..8
        assert (counts.sum(1) == k).all()
        assert (counts <= avail[:, 1:]).all()
        assert (counts >= np.floor(takes[:, 1:] - 1e-9)).all() and (counts <= np.ceil(takes[:, 1:] + 1e-9)).all()
    mean = np.mean([np.diff(-((u - bounds) // UNIT), axis=1)[:, ::-1] for u in range(0, UNIT, UNIT // 256)], 0)
    assert np.abs(mean - takes[:, 1:]).max() < 0.01


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


def test_meta_json_has_the_mix_fields(small):
    index = make_index(small, curriculum(k_negatives=16))
    meta = json.loads((small.root / "idx" / "meta.json").read_text())
    assert {"mix", "requested_mix", "realized_mix", "shortfalls"} <= set(meta)
    sim = simulate_epoch(index, seed=0)
    assert {str(h): round(float(v), 6) for h, v in enumerate(sim["realized"]) if v} == \
        {h: v for h, v in meta["realized_mix"].items() if v}


def test_empty_filter_is_a_clear_error(small):
    with pytest.raises(SamplingError, match="no .anchor, positive. pair passes"):
        make_index(small, curriculum(positive_distance_min=9.0))

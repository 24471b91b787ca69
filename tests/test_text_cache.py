"""text_embeddings encodes only texts the cache (keyed by encoder version and text hash) lacks."""
import zlib

import numpy as np
import pyarrow as pa
import pytest

from naics_pipeline.data.descriptions import build_descriptions
from naics_pipeline.data.source import fetch_source
from naics_pipeline.encoders import HashingEncoder, TextCache, build_text_embeddings


class CountingEncoder:
    """A fake encoder that records every text it is asked to encode."""
    name = "counting"
    dim = 8

    def __init__(self, version="1"):
        self.version = version
        self.encoded: list[str] = []

    def encode(self, texts, **_):
        self.encoded += texts
        return np.stack([np.random.default_rng(zlib.crc32(t.encode())).standard_normal(self.dim) for t in texts]
                        ).astype(np.float32)


@pytest.fixture
def tables(census_dir, tmp_path):
    built = build_descriptions(fetch_source(str(census_dir), tmp_path / "download"))
    return built.descriptions, built.holdout


def with_title(desc: pa.Table, row: int, title: str) -> pa.Table:
    titles = desc.column("title").to_pylist()
    titles[row] = title
    return desc.set_column(desc.schema.get_field_index("title"), "title", pa.array(titles))


def test_second_build_encodes_nothing_and_a_changed_text_only_itself(tables, tmp_path):
    desc, holdout = tables
    cache = tmp_path / "text_cache"
    first_encoder = CountingEncoder()
    first = build_text_embeddings(desc, holdout, first_encoder, cache_dir=cache)
    distinct = first.stats["distinct"]
    assert sorted(first_encoder.encoded) == sorted(set(first_encoder.encoded))   # each distinct text once
    assert len(first_encoder.encoded) == distinct == first.stats["encoded"] > 0 and first.stats["reused"] == 0
    assert first.stats["texts"] > distinct                                      # some texts repeat

    again_encoder = CountingEncoder()
    again = build_text_embeddings(desc, holdout, again_encoder, cache_dir=cache)
    assert again_encoder.encoded == [] and again.stats == {**first.stats, "encoded": 0, "reused": distinct}
    np.testing.assert_array_equal(again.channels, first.channels)
    np.testing.assert_array_equal(again.holdout, first.holdout)

    changed_encoder = CountingEncoder()
    changed = build_text_embeddings(with_title(desc, 3, "A title nobody wrote before"), holdout, changed_encoder,
                                    cache_dir=cache)
    assert changed_encoder.encoded == ["A title nobody wrote before"]
    assert not np.array_equal(changed.channels[3, 0], first.channels[3, 0])
    unchanged = np.ones(len(desc), bool)
    unchanged[3] = False
    np.testing.assert_array_equal(changed.channels[unchanged], first.channels[unchanged])
    np.testing.assert_array_equal(changed.channels[3, 1:], first.channels[3, 1:])


def test_another_encoder_version_reuses_nothing(tables, tmp_path):
    desc, holdout = tables
    build_text_embeddings(desc, holdout, CountingEncoder("1"), cache_dir=tmp_path)
    newer = CountingEncoder("2")
    built = build_text_embeddings(desc, holdout, newer, cache_dir=tmp_path)
    assert built.stats["reused"] == 0 and len(newer.encoded) == built.stats["distinct"]
    assert sorted(p.name for p in tmp_path.glob("[!.]*.npz")) == ["counting-1.npz", "counting-2.npz"]


def test_cached_vectors_equal_fresh_ones(tables, tmp_path):
    desc, holdout = tables
    fresh = build_text_embeddings(desc, holdout, "hashing")
    for _ in range(2):   # cold cache, then warm
        cached = build_text_embeddings(desc, holdout, "hashing", cache_dir=tmp_path)
        np.testing.assert_array_equal(cached.channels, fresh.channels)
        np.testing.assert_array_equal(cached.present, fresh.present)
        np.testing.assert_array_equal(cached.holdout, fresh.holdout)
    assert cached.stats["encoded"] == 0


def test_unreadable_cache_is_rebuilt(tables, tmp_path):
    desc, holdout = tables
    path = TextCache(tmp_path, HashingEncoder()).path
    path.write_bytes(b"not an npz")
    notes = []
    built = build_text_embeddings(desc, holdout, "hashing", cache_dir=tmp_path, progress=notes.append)
    assert built.stats["reused"] == 0 and any("unreadable" in n for n in notes)
    assert len(TextCache(tmp_path, HashingEncoder()).vectors) == built.stats["distinct"]

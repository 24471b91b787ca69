"""The torch sampler against the numpy one, on CPU torch (and the no-sync rule on CUDA when present)."""
import numpy as np
import pytest
import torch
from torch.overrides import TorchFunctionMode

from naics_pipeline.curricula.mix_plan import MIX_TOLERANCE
from naics_pipeline.curricula.sampler import Sampler
from naics_pipeline.curricula.sampling_index import HARDNESS
from naics_pipeline.curricula.torch_sampler import TorchSampler
from tests.test_sampling import curriculum, dense, expand, make_index  # noqa: F401 (fixture)

SHARES = {1: 0.4, 2: 0.2, 3: 0.1, 4: 0.1, 5: 0.1, 6: 0.05, 8: 0.05}


@pytest.fixture(scope="module")
def indexes(dense):  # noqa: F811
    c = dict(difficulty_buckets=list(SHARES), bucket_percentages=SHARES, k_negatives=16)
    return {mix: make_index(dense, curriculum(**c, mix=mix), f"torch_{mix}") for mix in ("per_pair", "global")}


def bucket_counts(hardness: np.ndarray) -> np.ndarray:
    """(B, 9) negatives per hardness in each row."""
    return np.stack([(hardness == h).sum(1) for h in range(9)], axis=1)


@pytest.mark.parametrize("mix", ["per_pair", "global"])
def test_same_candidates_takes_and_distinct_draws(indexes, mix):
    index = indexes[mix]
    allowed = expand(index)
    _, takes, _ = index.plan(mix)
    sampler = TorchSampler(index, "cpu", seed=5)
    for batch in sampler.epoch(0, batch_size=300):
        a, p, neg, hard = (t.numpy() for t in batch)
        pids = np.searchsorted(index.anchor * index.n_codes + index.positive, a * index.n_codes + p)
        k = neg.shape[1]
        drawn = set(zip(np.repeat(a, k).tolist(), np.repeat(p, k).tolist(), neg.ravel().tolist(),
                        hard.ravel().astype(int).tolist()))
        assert drawn <= allowed
        ordered = np.sort(neg, axis=1)
        assert not (ordered[:, 1:] == ordered[:, :-1]).any()
        counts = bucket_counts(hard)[:, 1:]
        if mix == "per_pair":
            assert (counts == takes[pids, 1:]).all()
        else:
            assert (counts >= np.floor(takes[pids, 1:] - 1e-9)).all()
            assert (counts <= np.ceil(takes[pids, 1:] + 1e-9)).all()


@pytest.mark.parametrize("mix", ["per_pair", "global"])
def test_realized_mix_matches_numpy_sampler(indexes, mix):
    index = indexes[mix]
    torch_counts, numpy_counts = np.zeros(9), np.zeros(9)
    for epoch in range(4):
        for batch in TorchSampler(index, "cpu", seed=1).epoch(epoch, batch_size=512):
            torch_counts += np.bincount(batch.hardness.numpy().ravel(), minlength=9)
        for batch in Sampler(index, batch_size=512, seed=1).epoch(epoch):
            numpy_counts += np.bincount(batch.hardness.ravel(), minlength=9)
    torch_mix, numpy_mix = torch_counts / torch_counts.sum(), numpy_counts / numpy_counts.sum()
    assert np.abs(torch_mix - numpy_mix).max() < 0.01
    if mix == "per_pair":   # every pair once per epoch: exactly the plan's takes
        assert np.array_equal(torch_counts, numpy_counts)
    else:
        for h, share in SHARES.items():
            assert torch_mix[h] == pytest.approx(share, abs=MIX_TOLERANCE)


@pytest.mark.parametrize("mix", ["per_pair", "global"])
def test_epoch_order_and_determinism(indexes, mix):
    index = indexes[mix]
    sampler = TorchSampler(index, "cpu", seed=3)
    order = sampler.epoch_order(2)
    assert torch.equal(order, TorchSampler(index, "cpu", seed=3).epoch_order(2))
    assert not torch.equal(order, sampler.epoch_order(3))
    draws = np.bincount(order.numpy(), minlength=len(index))
    weights, _, _ = index.plan(mix)
    expected = weights / weights.sum() * len(index)
    assert len(order) == len(index)
    assert (draws >= np.floor(expected - 1e-6)).all() and (draws <= np.ceil(expected + 1e-6)).all()
    shards = [sampler.epoch_order(2, rank=r, world=3) for r in range(3)]
    assert all(len(s) == len(index) // 3 for s in shards)
    assert torch.equal(torch.cat(shards).sort().values, order[:3 * (len(index) // 3)].sort().values)
    first = [tuple(t.clone() for t in b) for b in sampler.epoch(2, batch_size=128)]
    again = [tuple(t.clone() for t in b) for b in sampler.epoch(2, batch_size=128)]
    assert all(torch.equal(x, y) for bx, by in zip(first, again) for x, y in zip(bx, by))
    other = next(iter(sampler.epoch(3, batch_size=128)))
    assert not torch.equal(first[0][2], other[2])


def test_train_split_keeps_to_its_pairs(indexes):
    index = indexes["global"]
    ids = np.arange(0, len(index), 2)
    sampler = TorchSampler(index, "cpu", pair_ids=ids)
    drawn = torch.cat([b.anchor * index.n_codes + b.positive for b in sampler.epoch(0, batch_size=256)]).numpy()
    keys = index.anchor * index.n_codes + index.positive
    assert len(drawn) == len(ids) and set(drawn.tolist()) <= set(keys[ids].tolist())


class SyncRecorder(TorchFunctionMode):
    """Records calls that read tensor values on the host or give data-dependent shapes."""

    SYNCING = {"item", "tolist", "numpy", "__bool__", "__int__", "__float__", "__index__", "nonzero",
               "masked_select", "unique", "unique_consecutive", "repeat_interleave", "cpu"}

    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", str(func))
        keys = args[1] if name in ("__getitem__", "__setitem__") and len(args) > 1 else ()
        keys = keys if isinstance(keys, tuple) else (keys,)
        if name in self.SYNCING or any(isinstance(k, torch.Tensor) and k.dtype == torch.bool for k in keys):
            self.seen.append(name)
        return func(*args, **(kwargs or {}))


def test_sync_recorder_catches_host_reads():
    x = torch.arange(10)
    with SyncRecorder() as recorder:
        x.sum().item()
        x[x > 3]
        x.nonzero()
        bool(x[0] > 1)
        torch.searchsorted(x, x)
    assert recorder.seen == ["item", "__getitem__", "nonzero", "__bool__"]


@pytest.mark.parametrize("mix", ["per_pair", "global"])
def test_hot_path_has_no_host_reads(indexes, mix):
    sampler = TorchSampler(indexes[mix], "cpu")
    g = sampler.generator(0)
    with SyncRecorder() as recorder:
        order = sampler.epoch_order(0, generator=g)
        batch = sampler.batch(order[:256], g)
    assert recorder.seen == [] and batch.negatives.shape == (256, 16)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_batch_runs_without_synchronisation(indexes):
    sampler = TorchSampler(indexes["global"], "cuda")
    g = sampler.generator(0)
    torch.cuda.set_sync_debug_mode("error")
    try:
        order = sampler.epoch_order(0, generator=g)
        batch = sampler.batch(order[:256], g)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    hardness = batch.hardness.cpu().numpy()
    assert set(np.unique(hardness)) <= set(HARDNESS)

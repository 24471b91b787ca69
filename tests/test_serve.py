"""`naics-pipeline serve` as a user meets it: the real server in a subprocess on a free port, over a short
stage trained on a generated tree (hashing encoder, one epoch), called over HTTP."""
import http.client
import json
import os
import re
import socket
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest
import requests

from naics_pipeline.cli import main
from naics_pipeline.text.service import MAX_BODY_BYTES, MAX_TEXT_CHARS, MAX_TEXTS
from tests.census_fixtures import trained_store

START_TIMEOUT_S = 120


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A storage root with tables, hashing text embeddings and one trained stage."""
    return trained_store(tmp_path_factory.mktemp("serve"), epochs=1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(store, tmp_path_factory):
    """The base URL of a running `naics-pipeline serve --root STORE`; the process is checked alive and
    stopped at the end."""
    port = free_port()
    log = (tmp_path_factory.mktemp("serve-log") / "server.log").open("w+")
    proc = subprocess.Popen([sys.executable, "-m", "naics_pipeline.cli", "serve", "--root", str(store.root),
                             "--port", str(port), "--log-level", "warning"],
                            stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy())
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            log.seek(0)
            pytest.fail(f"the server exited with {proc.returncode}:\n{log.read()}")
        try:
            if requests.get(f"{url}/healthz", timeout=2).ok:
                break
        except requests.ConnectionError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the server did not answer /healthz within {START_TIMEOUT_S} s")
        time.sleep(0.2)
    yield url
    alive = proc.poll() is None
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:   # a connection left hanging: uvicorn waits for it to close
        proc.kill()
        proc.wait()
    log.seek(0)
    server_log = log.read()
    log.close()
    assert alive, f"the server died during the tests:\n{server_log}"


def post(url: str, body, **kw) -> requests.Response:
    return requests.post(f"{url}/classify", json=body, timeout=60, **kw)


def test_healthz(server):
    r = requests.get(f"{server}/healthz", timeout=10)
    assert r.status_code == 200 and r.json() == {"status": "ok", "stage": "stage_1"}


def test_classify_answers_the_contract(server, store):
    from naics_pipeline.text.classify import TextClassifier

    texts = ["soybean farm", "custom software programming", "Cola, soft drinks"]
    r = post(server, {"texts": texts, "k": 3, "min_precision": 0.5})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"stage", "results"} and body["stage"] == "stage_1"
    titles = {row["code"]: row["title"] for row in pq.read_table(store.descriptions).to_pylist()}
    assert [res["text"] for res in body["results"]] == texts
    for res in body["results"]:
        assert set(res) == {"text", "codes", "confident"} and len(res["codes"]) == 3
        for c in res["codes"]:
            assert set(c) == {"code", "title", "score", "level"}
            assert c["title"] == titles[c["code"]] and c["level"] == len(c["code"]) == 6 and 0 < c["score"] <= 1
        scores = [c["score"] for c in res["codes"]]
        assert scores == sorted(scores, reverse=True)
        if res["confident"] is not None:
            assert set(res["confident"]) == {"code", "level", "score"} and res["confident"]["level"] in (2, 4, 6)
    # the service answers what the library answers
    expected = TextClassifier.load(store.root).classify(texts, k=3, min_precision=0.5)
    assert body["results"] == json.loads(json.dumps(expected))


def test_classify_defaults(server):
    r = post(server, {"texts": ["soybean farm"]})
    assert r.status_code == 200, r.text
    (res,) = r.json()["results"]
    assert len(res["codes"]) == 5 and res["confident"] is None      # k=5, no min_precision
    r = post(server, {"texts": ["soybean farm"], "k": 2, "min_precision": 1})   # 1 is inside (0, 1]
    assert r.status_code == 200 and len(r.json()["results"][0]["codes"]) == 2
    r = post(server, {"texts": ["soybean farm", "cola"], "min_precision": 0.01})   # some level always reaches 1%
    confident = [res["confident"] for res in r.json()["results"]]
    assert all(set(c) == {"code", "level", "score"} and c["level"] in (2, 4, 6) and c["score"] >= 0.01
               for c in confident), confident


def check_error(r: requests.Response, status: int, field: str | None, message: str) -> None:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert body["field"] == field and message in body["detail"], body
    assert "\n" not in body["detail"] and "Traceback" not in r.text


@pytest.mark.parametrize("body,field,message", [
    ([1, 2], "body", "must be a JSON object"),
    ({}, "texts", "texts: required"),
    ({"k": 3}, "texts", "texts: required"),
    ({"texts": "soybean farm"}, "texts", "must be a list of strings, not a string"),
    ({"texts": None}, "texts", "must be a list of strings, not null"),
    ({"texts": ["soy", 3]}, "texts[1]", "texts[1]: must be a string, not an integer"),
    ({"texts": ["soy", ["a"]]}, "texts[1]", "must be a string, not a list"),
    ({"texts": []}, "texts", "the list is empty"),
    ({"texts": ["soy", ""]}, "texts[1]", "empty text"),
    ({"texts": ["soy"] * (MAX_TEXTS + 1)}, "texts", "10,001 texts, at most 10,000"),
    ({"texts": ["soy", "x" * (MAX_TEXT_CHARS + 1)]}, "texts[1]", "10,001 characters, at most 10,000"),
    ({"texts": ["soy"], "k": 0}, "k", "k: must be at least 1, not 0"),
    ({"texts": ["soy"], "k": -3}, "k", "k: must be at least 1"),
    ({"texts": ["soy"], "k": "5"}, "k", "k: must be an integer, not a string"),
    ({"texts": ["soy"], "k": 2.5}, "k", "k: must be an integer"),
    ({"texts": ["soy"], "k": 101}, "k", "k: at most 100"),
    ({"texts": ["soy"], "min_precision": 0}, "min_precision", "must be in (0, 1], not 0"),
    ({"texts": ["soy"], "min_precision": -0.5}, "min_precision", "must be in (0, 1]"),
    ({"texts": ["soy"], "min_precision": 1.01}, "min_precision", "must be in (0, 1], not 1.01"),
    ({"texts": ["soy"], "min_precision": "high"}, "min_precision", "must be a number in (0, 1] or null"),
    ({"texts": ["soy"], "min_precision": "0.9"}, "min_precision", "must be a number in (0, 1] or null, not a string"),
    ({"texts": ["soy"], "min_precision": True}, "min_precision", "not a boolean"),
    ({"texts": ["soy"], "k": True}, "k", "k: must be an integer, not a boolean"),
    ({"texts": ["soy"], "text": "soy"}, "text", "text: unknown field; the fields are texts, k, min_precision"),
])
def test_invalid_fields_get_a_422_naming_the_field(server, body, field, message):
    check_error(post(server, body), 422, field, message)


def test_several_bad_fields_are_listed(server):
    r = post(server, {"texts": ["soy", 1, 2], "k": 0})
    check_error(r, 422, "texts[1]", "(and 2 more)")
    assert [e["field"] for e in r.json()["errors"]] == ["texts[1]", "texts[2]", "k"]


@pytest.mark.parametrize("data,content_type,status,message", [
    (b'{"texts": ["soy"', "application/json", 400, "body: malformed JSON"),
    (b"texts=soy", "application/json", 400, "body: malformed JSON"),
    (b'{"texts": ["caf\xe9"]}', "application/json", 400, "must be UTF-8 JSON"),
    (b'{"texts": ["soy"]}', "text/plain", 415, "Content-Type: application/json"),
    (b'{"texts": ["soy"]}', None, 415, "no Content-Type"),
])
def test_unreadable_bodies(server, data, content_type, status, message):
    headers = {"Content-Type": content_type} if content_type else {}
    r = requests.post(f"{server}/classify", data=data, headers=headers, timeout=30)
    check_error(r, status, "body", message)


def test_an_empty_body_is_a_missing_body(server):
    r = requests.post(f"{server}/classify", data=b"", headers={"Content-Type": "application/json"}, timeout=30)
    check_error(r, 422, "body", "body: required")


def test_a_body_over_the_limit_by_content_length(server):
    big = json.dumps({"texts": ["x" * 1000] * (MAX_BODY_BYTES // 1000 + 10)}).encode()
    assert len(big) > MAX_BODY_BYTES
    r = requests.post(f"{server}/classify", data=big, headers={"Content-Type": "application/json"}, timeout=60)
    check_error(r, 413, "body", f"over {MAX_BODY_BYTES:,} bytes")


def test_content_length_alone_gets_the_413_before_any_body_is_sent(server):
    """The server answers from the header: it does not wait to read the 20 MB the client announces."""
    host, port = server.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.putrequest("POST", "/classify")
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Content-Length", str(2 * MAX_BODY_BYTES))
    conn.endheaders()                 # headers only: not one byte of the body
    r = conn.getresponse()
    body = json.loads(r.read())
    conn.close()
    assert r.status == 413 and body["field"] == "body" and f"over {MAX_BODY_BYTES:,} bytes" in body["detail"]


def test_a_streamed_body_over_the_limit(server):
    """No Content-Length (chunked): the server counts while reading and stops at the limit."""
    chunk = b"[" + b'"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",' * 10_000

    def chunks():
        yield b'{"texts": '
        for _ in range(MAX_BODY_BYTES // len(chunk) + 2):
            yield chunk

    r = requests.post(f"{server}/classify", data=chunks(), headers={"Content-Type": "application/json"},
                      timeout=60)
    check_error(r, 413, "body", "over 10,000,000 bytes")


def test_unknown_paths_and_methods_get_json(server):
    r = requests.get(f"{server}/nope", timeout=10)
    assert r.status_code == 404 and r.json()["detail"] == "Not Found"
    r = requests.get(f"{server}/classify", timeout=10)
    assert r.status_code == 405 and r.json()["detail"] == "Method Not Allowed"


def test_openapi_page(server):
    spec = requests.get(f"{server}/openapi.json", timeout=10).json()
    assert {"/classify", "/healthz"} <= set(spec["paths"])
    request = spec["components"]["schemas"]["ClassifyRequest"]
    assert request["required"] == ["texts"] and {"texts", "k", "min_precision"} == set(request["properties"])
    assert {"200", "400", "413", "415", "422"} <= set(spec["paths"]["/classify"]["post"]["responses"])
    page = requests.get(f"{server}/docs", timeout=10)
    assert page.status_code == 200 and "swagger" in page.text.lower() and "/openapi.json" in page.text
    # the pages' scripts and styles come from this server, not from a CDN: they work offline
    for path, n_assets in (("/docs", 2), ("/redoc", 1)):
        html = requests.get(f"{server}{path}", timeout=10).text
        assets = re.findall(r"""(?:src|href)=['"]([^'"]+\.(?:js|css))['"]""", html)
        assert len(assets) == n_assets and all(a.startswith("/") for a in assets), (path, assets)
        for asset in assets:
            r = requests.get(f"{server}{asset}", timeout=10)
            assert r.status_code == 200 and len(r.content) > 10_000, asset


def test_the_server_still_answers_after_bad_requests(server):
    """Runs after the error tests (file order): the same process answers health checks and classifies."""
    assert requests.get(f"{server}/healthz", timeout=10).json()["status"] == "ok"
    r = post(server, {"texts": ["soybean farm", "cattle feedlot"], "k": 1})
    assert r.status_code == 200 and [len(res["codes"]) for res in r.json()["results"]] == [1, 1]


def test_serve_without_a_model_fails_in_one_line(tmp_path):
    """The model loads before the port is bound: no model, no server, one line saying why."""
    with pytest.raises(SystemExit) as exc:
        main(["serve", "--root", str(tmp_path), "--port", str(free_port())])
    assert str(exc.value).startswith("naics-pipeline serve: no trained model under") and "\n" not in str(exc.value)


def test_waiting_requests_are_classified_together_and_answered_apart():
    """Batcher: requests queued while a batch runs go as one classify call per (k, min_precision),
    each request gets back its own texts' results, and a failing group fails only its own requests."""
    import asyncio
    import threading

    from naics_pipeline.text.classify import ClassifyError
    from naics_pipeline.text.service import Batcher

    class Recorder:
        stage = "fake"

        def __init__(self):
            self.calls, self.release = [], threading.Event()

        def classify(self, texts, k=5, min_precision=None):
            self.calls.append((list(texts), k, min_precision))
            if len(self.calls) == 1:
                self.release.wait(10)         # hold the first batch until the others are queued
            if "bad" in texts:
                raise ClassifyError("bad text")
            return [{"text": t, "codes": [k], "confident": min_precision} for t in texts]

    async def scenario():
        clf = Recorder()
        batcher = Batcher(clf, batch_texts=6)
        async with batcher.running():
            first = asyncio.create_task(batcher.classify(["a"], 1, None))
            await asyncio.sleep(0.05)
            jobs = [(["b", "c"], 2, None), (["d"], 3, 0.5), (["e"], 2, None), (["bad"], 4, None),
                    (["f", "g", "h", "i", "j", "k", "l"], 2, None)]       # too many to join: a batch of its own
            tasks = [asyncio.create_task(batcher.classify(*job)) for job in jobs]
            await asyncio.sleep(0.05)
            clf.release.set()
            results = await asyncio.gather(first, *tasks, return_exceptions=True)
        return clf.calls, results

    calls, results = asyncio.run(scenario())
    assert results[0] == [{"text": "a", "codes": [1], "confident": None}]
    assert [r["text"] for r in results[1]] == ["b", "c"] and results[1][0]["codes"] == [2]
    assert results[2] == [{"text": "d", "codes": [3], "confident": 0.5}]
    assert [r["text"] for r in results[3]] == ["e"] and results[3][0]["codes"] == [2]
    assert isinstance(results[4], ClassifyError)
    assert [r["text"] for r in results[5]] == list("fghijkl")
    assert calls == [(["a"], 1, None), (["b", "c", "e"], 2, None), (["d"], 3, 0.5), (["bad"], 4, None),
                     (list("fghijkl"), 2, None)]


def test_a_failure_of_the_server_is_a_500_without_its_trace(caplog):
    """A classifier that breaks (not the client's doing): 500, a JSON body without the exception or its
    trace (those go to the log), and the service goes on answering."""
    import threading

    import uvicorn

    from naics_pipeline.text.service import create_app

    class Broken:
        stage = "broken"

        def classify(self, texts, k=5, min_precision=None):
            raise ZeroDivisionError("internal detail")

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(Broken()), host="127.0.0.1", port=port, log_level="critical"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        r = requests.post(f"http://127.0.0.1:{port}/classify", json={"texts": ["soy"]}, timeout=30)
        assert r.status_code == 500 and r.json()["detail"] == "internal error: the server log has the details"
        assert "internal detail" not in r.text and "Traceback" not in r.text
        assert "ZeroDivisionError: internal detail" in caplog.text
        assert requests.get(f"http://127.0.0.1:{port}/healthz", timeout=10).json() == {"status": "ok",
                                                                                        "stage": "broken"}
    finally:
        server.should_exit = True
        thread.join(timeout=30)

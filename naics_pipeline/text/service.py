"""`naics-pipeline serve`: TextClassifier behind HTTP (FastAPI on uvicorn), the model loaded once.

    POST /classify  {"texts": [...], "k": 5, "min_precision": 0.95}  ->  {"stage": ..., "results": [...]}
    GET  /healthz   ->  {"status": "ok", "stage": ...}
    GET  /docs, /redoc, /openapi.json: the OpenAPI pages (their scripts served from the package) and schema.

Bad requests get a 4xx JSON body `{"detail": one line, "field": the request field, "errors": [...]}`
and the server goes on serving: 400 malformed JSON, 413 a body over MAX_BODY_BYTES (by Content-Length,
or counted while it streams in, before it is all read), 415 a body that is not JSON, 422 a field that
breaks the contract (ClassifyRequest). A failure of the server itself is a 500 with no trace in the
body; the trace goes to the server's log.

Classification runs in one worker thread (Batcher): the encoder already uses every core for one batch,
so two calls at once would only contend. Requests that arrive while a batch is being classified wait
and then go together as the next batch (up to BATCH_TEXTS texts; one classify call per distinct k and
min_precision), so concurrent clients share encoder calls instead of queueing one by one; a lone request
waits for nothing. The event loop stays free to read, validate and answer health checks meanwhile.
"""
from __future__ import annotations

import asyncio
import logging
import sys
from collections import deque
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Protocol

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_TEXTS = 10_000              # texts per request
MAX_TEXT_CHARS = 10_000         # characters per text
MAX_BODY_BYTES = 10_000_000     # 10 MB of request body
MAX_K = 100                     # codes per text: keeps a full request's answer to a bounded size
MAX_LISTED_ERRORS = 20          # validation errors listed in one answer
BATCH_TEXTS = 512               # texts of waiting requests classified together (a larger request goes alone)
DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8000

log = logging.getLogger("naics_pipeline.serve")


class Classifier(Protocol):
    """What the service needs of naics_pipeline.text.classify.TextClassifier."""
    stage: str

    def classify(self, texts: list[str], k: int = 5, min_precision: float | None = None) -> list[dict]: ...


@dataclass
class Job:
    texts: list[str]
    k: int
    min_precision: float | None
    future: asyncio.Future = field(repr=False)


class Batcher:
    """Runs the classifier in one worker thread; the requests waiting when it frees up go as one batch."""

    def __init__(self, classifier: Classifier, batch_texts: int = BATCH_TEXTS) -> None:
        self.classifier, self.batch_texts = classifier, batch_texts
        self.pending: deque[Job] = deque()
        self.wake = asyncio.Event()
        self.task: asyncio.Task | None = None

    async def classify(self, texts: list[str], k: int, min_precision: float | None) -> list[dict]:
        job = Job(texts, k, min_precision, asyncio.get_running_loop().create_future())
        self.pending.append(job)
        self.wake.set()
        return await job.future

    def next_batch(self) -> list[Job]:
        batch = [self.pending.popleft()]
        n = len(batch[0].texts)
        while self.pending and n + len(self.pending[0].texts) <= self.batch_texts:
            batch.append(self.pending.popleft())
            n += len(batch[-1].texts)
        return [job for job in batch if not job.future.done()]     # a client gone: its job was cancelled

    def run_batch(self, batch: list[Job]) -> list[list[dict] | Exception]:
        """In the worker thread: one classify call per (k, min_precision), split back per job."""
        out: list[list[dict] | Exception] = [[] for _ in batch]
        groups: dict[tuple, list[int]] = {}
        for i, job in enumerate(batch):
            groups.setdefault((job.k, job.min_precision), []).append(i)
        for (k, min_precision), members in groups.items():
            try:
                results = self.classifier.classify([t for i in members for t in batch[i].texts], k=k,
                                                   min_precision=min_precision)
            except Exception as exc:   # handed to each request of the group
                for i in members:
                    out[i] = exc
                continue
            start = 0
            for i in members:
                out[i] = results[start:start + len(batch[i].texts)]
                start += len(batch[i].texts)
        return out

    async def run(self) -> None:
        while True:
            await self.wake.wait()
            self.wake.clear()
            while self.pending:
                batch = self.next_batch()
                if not batch:
                    continue
                try:
                    outcomes = await asyncio.to_thread(self.run_batch, batch)
                except Exception as exc:   # the loop outlives any one batch
                    outcomes = [exc] * len(batch)
                for job, outcome in zip(batch, outcomes):
                    if job.future.done():
                        continue
                    if isinstance(outcome, Exception):
                        job.future.set_exception(outcome)
                    else:
                        job.future.set_result(outcome)

    @asynccontextmanager
    async def running(self):
        self.task = asyncio.create_task(self.run())
        try:
            yield
        finally:
            self.task.cancel()


Text = Annotated[str, StringConstraints(min_length=1, max_length=MAX_TEXT_CHARS), Field(strict=True)]


class ClassifyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    texts: list[Text] = Field(min_length=1, max_length=MAX_TEXTS,
                              description=f"business descriptions, 1 to {MAX_TEXTS:,}, each of 1 to "
                                          f"{MAX_TEXT_CHARS:,} characters",
                              examples=[["soybean farm", "custom software programming"]])
    k: int = Field(5, ge=1, le=MAX_K, strict=True, description="codes per text, best first")
    min_precision: float | None = Field(
        None, gt=0, le=1, allow_inf_nan=False, strict=True,
        description="give each text the deepest level (6, 4 or 2 digits) at which it can be coded with "
                    "this precision (each level's probability cut fitted on the validation split, never "
                    "above it), in `confident`; null there when no level does")


class Code(BaseModel):
    code: str
    title: str
    score: float = Field(description="calibrated probability that this is the text's code")
    level: int


class Confident(BaseModel):
    code: str
    level: int = Field(description="digits of `code`: 6, 4 or 2")
    score: float


class Result(BaseModel):
    text: str
    codes: list[Code]
    confident: Confident | None = Field(description="null without min_precision, or when no level reaches it")


class ClassifyResponse(BaseModel):
    stage: str
    results: list[Result]


class Health(BaseModel):
    status: str
    stage: str


class Error(BaseModel):
    detail: str = Field(description="one line: the field and what is wrong with it")
    field: str | None = Field(description="the request field at fault (`body`, `texts`, `texts[3]`, `k`, ...)")
    errors: list[dict[str, str]] = Field(default_factory=list, description="every field at fault, up to 20")


def error_response(status: int, field: str | None, detail: str,
                   errors: list[dict[str, str]] | None = None) -> JSONResponse:
    body = {"detail": detail, "field": field, "errors": errors or ([{"field": field, "message": detail}]
                                                                    if field else [])}
    return JSONResponse(body, status_code=status)


def field_name(loc: tuple) -> str:
    """('body', 'texts', 3) -> 'texts[3]'; ('body',) -> 'body'."""
    parts = [p for p in loc if p != "body"] or ["body"]
    name = str(parts[0])
    for p in parts[1:]:
        name += f"[{p}]" if isinstance(p, int) else f".{p}"
    return name


def kind(value: Any) -> str:
    return {type(None): "null", bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "an object"}.get(type(value), type(value).__name__)


def explain(err: dict) -> tuple[str, str]:
    """One pydantic error -> (field, message naming the field and the rule it broke)."""
    field, typ, value, ctx = field_name(tuple(err["loc"])), err["type"], err.get("input"), err.get("ctx") or {}
    if typ == "missing":
        what = {"texts": "a list of strings", "body": "a JSON object with a `texts` list"}.get(field, "a value")
        return field, f"{field}: required ({what})"
    if typ == "extra_forbidden":
        return field, f"{field}: unknown field; the fields are {', '.join(ClassifyRequest.model_fields)}"
    if field == "texts":
        if typ == "too_short":
            return field, "texts: the list is empty: give at least one text"
        if typ == "too_long":
            return field, f"texts: {ctx.get('actual_length', '?'):,} texts, at most {MAX_TEXTS:,} per request"
        if typ == "list_type":
            return field, f"texts: must be a list of strings, not {kind(value)}"
    if field.startswith("texts["):
        if typ == "string_type":
            return field, f"{field}: must be a string, not {kind(value)}"
        if typ == "string_too_long":
            return field, f"{field}: {len(value):,} characters, at most {MAX_TEXT_CHARS:,}"
        if typ == "string_too_short":
            return field, f"{field}: empty text"
    if field == "k":
        if typ == "int_type":
            return field, f"k: must be an integer, not {kind(value)}"
        if typ == "greater_than_equal":
            return field, f"k: must be at least 1, not {value}"
        if typ == "less_than_equal":
            return field, f"k: at most {MAX_K}, not {value}"
    if field == "min_precision":
        if typ in ("greater_than", "less_than_equal", "finite_number"):
            return field, f"min_precision: must be in (0, 1], not {value}"
        if typ in ("float_type", "float_parsing"):
            return field, f"min_precision: must be a number in (0, 1] or null, not {kind(value)}"
    if field == "body" and typ in ("model_attributes_type", "dict_type", "model_type"):
        return field, f"body: must be a JSON object with a `texts` list, not {kind(value)}"
    return field, f"{field}: {err['msg']}"


class BodyLimit:
    """ASGI middleware: a request whose Content-Length is over `limit` bytes gets the 413 before any of
    its body is read; one without (chunked) is counted as it streams in, and the read stops with a 413
    at the first chunk past the limit. (Starlette's RequestBodyLimitMiddleware answers the first case
    in plain text, over any JSON error handler, hence this one.)"""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = Headers(scope=scope).get("content-length", "")
        if length.isdigit() and int(length) > self.limit:
            return await too_large_response()(scope, receive, send)
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise HTTPException(413)   # the route's error handler answers it (too_large_response)
            return message

        await self.app(scope, counted, send)


def too_large_response() -> JSONResponse:
    return error_response(413, "body", f"body: over {MAX_BODY_BYTES:,} bytes; send fewer texts per request")


def create_app(classifier: Classifier) -> FastAPI:
    batcher = Batcher(classifier)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        async with batcher.running():
            yield

    # FastAPIOffline: FastAPI whose /docs and /redoc pages load Swagger UI and ReDoc from files in the
    # package, not from a CDN (the pages work on a host without internet)
    app = FastAPIOffline(title="naics-pipeline", version="1", lifespan=lifespan,
                         description="Business descriptions -> NAICS 2022 codes, with calibrated confidence.")
    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)
    errors = {400: {"model": Error, "description": "malformed JSON"},
              413: {"model": Error, "description": f"body over {MAX_BODY_BYTES:,} bytes"},
              415: {"model": Error, "description": "body not sent as application/json"},
              422: {"model": Error, "description": "a field breaks the contract; `field` names it"}}

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        errs = list(exc.errors())
        if errs and errs[0]["type"] == "json_invalid":
            ctx = errs[0].get("ctx") or {}
            pos = errs[0]["loc"][1] if len(errs[0]["loc"]) > 1 else "?"
            return error_response(400, "body", f"body: malformed JSON ({ctx.get('error', 'decode error')} "
                                               f"at character {pos})")
        content_type = request.headers.get("content-type", "")
        if errs and tuple(errs[0]["loc"]) == ("body",) and isinstance(errs[0].get("input"), bytes | bytearray):
            return error_response(415, "body", "body: send JSON with the header Content-Type: application/json "
                                               f"(got {content_type or 'no Content-Type'!r})")
        listed = [dict(zip(("field", "message"), explain(e))) for e in errs[:MAX_LISTED_ERRORS]]
        more = f" (and {len(errs) - 1} more)" if len(errs) > 1 else ""
        return error_response(422, listed[0]["field"], listed[0]["message"] + more, listed)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        if exc.status_code == 413:
            return too_large_response()
        if exc.status_code == 400:   # the body could not be decoded at all (not UTF-8)
            return error_response(400, "body", "body: not readable as JSON text: it must be UTF-8 JSON")
        return JSONResponse({"detail": str(exc.detail), "field": None, "errors": []},
                            status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def server_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("%s %s failed", request.method, request.url.path)
        return error_response(500, None, "internal error: the server log has the details")

    @app.get("/healthz", response_model=Health)
    async def healthz() -> dict:
        return {"status": "ok", "stage": classifier.stage}

    @app.post("/classify", response_model=ClassifyResponse, responses=errors)
    async def classify(request: ClassifyRequest) -> dict:
        """The k best codes of each text, and with `min_precision` the deepest level it can be
        coded at with that precision."""
        from naics_pipeline.text.classify import ClassifyError

        try:
            results = await batcher.classify(request.texts, request.k, request.min_precision)
        except ClassifyError as exc:   # the request fields are checked above; the classifier may know more
            return error_response(422, None, str(exc))
        return {"stage": classifier.stage, "results": results}

    return app


def serve(root: Path, stage: str | None = None, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
          log_level: str = "info") -> None:
    """Load the classifier once (a missing model fails here, before the port is bound), then serve."""
    import uvicorn

    from naics_pipeline.text.classify import TextClassifier

    classifier = TextClassifier.load(Path(root), stage)
    print(f"naics-pipeline serve: {classifier.stage} of {root} loaded; starting on http://{host}:{port} "
          "(/docs for the API)", file=sys.stderr, flush=True)
    uvicorn.run(create_app(classifier), host=host, port=port, log_level=log_level)

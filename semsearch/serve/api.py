"""The JSON endpoints: search, articles, info, health; writes with the token."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from ..cli.filters import parse_cli_filter
from ..errors import BadInputError
from ..load import DATE_ORDERS, first_of_each_id, read_jsonl, read_records
from ..records import Article, Hit, Skipped
from ..search import MODES
from .errors import ApiError
from .settings import ServeSettings
from .state import State

router = APIRouter()

JSONL_TYPES = (
    "application/x-ndjson",
    "application/jsonl",
    "application/json-lines",
    "application/x-jsonlines",
)


# -- documentation models (responses are built as dicts: Hit.to_dict() exactly) --


class ErrorBody(BaseModel):
    error: str = Field(description="A stable code: bad_request, not_found, locked, ...")
    detail: str = Field(description="What is wrong, in one line.")


class SearchBody(BaseModel):
    query: str
    mode: str
    k: int
    offset: int
    generation: int = Field(description="The committed generation every hit was read from.")
    took_ms: float = Field(description="Milliseconds the search took in the server.")
    hits: list[Hit] = Field(description="Each exactly semsearch.Hit.to_dict().")


class QueryResult(BaseModel):
    query: str
    hits: list[Hit] = Field(description="Each exactly semsearch.Hit.to_dict().")


class BatchBody(BaseModel):
    mode: str
    k: int
    offset: int
    generation: int
    took_ms: float
    results: list[QueryResult]


class SearchRequest(BaseModel):
    """``POST /search``: one query or a list of them, with the API's full filter."""

    model_config = ConfigDict(extra="forbid")

    q: str | list[str] = Field(description="A query, or a list of queries (batch search).")
    k: int = Field(10, description="Results per query (articles, or chunks with group=false).")
    offset: int = Field(0, description="Results to skip first (pagination).")
    # Checked by the search, as GET's: an unknown mode is a bad value (400), not a
    # malformed body.
    mode: str | None = Field(None, description="hybrid (the default), semantic or keyword.")
    filter: dict[str, Any] | None = Field(
        None,
        description='Conditions on fields, e.g. {"source": "Reuters", "date": '
        '{"gte": "2024-01-01"}, "tags": {"in": ["nato"]}} (see semsearch.filters).',
    )
    group: bool = Field(True, description="One hit per article (its best chunk), or chunks.")
    keyword_syntax: str = Field("text", description="text (words) or fts5 (FTS5's syntax).")
    hybrid_weight: float | None = Field(None, description="Semantic share of hybrid, 0 to 1.")


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": ErrorBody} for status in statuses}


# -- search ------------------------------------------------------------------------


@dataclass(frozen=True)
class SearchOutcome:
    """Hit lists of one snapshot, and how long the search took."""

    hits: list[list[Hit]]
    generation: int
    seconds: float


def run_search(
    state: State,
    queries: Sequence[str],
    *,
    k: int,
    offset: int = 0,
    mode: str | None = None,
    filter: dict[str, Any] | None = None,
    group: bool = True,
    keyword_syntax: str = "text",
    hybrid_weight: float | None = None,
) -> SearchOutcome:
    """Check the request against the server's limits and search one snapshot.

    Raises:
        BadInputError: for a query, k, offset or batch past the limits, or
            anything :meth:`~semsearch.reader.Reader.search_batch` refuses.
        NotReady: while the index is being opened.
    """
    limits = state.settings
    if not queries:
        raise BadInputError("no query: give q")
    if len(queries) > limits.max_batch:
        raise BadInputError(f"{len(queries)} queries; this server takes {limits.max_batch} at most")
    for text in queries:
        if len(text) > limits.max_query_chars:
            raise BadInputError(
                f"the query has {len(text):,} characters; this server takes "
                f"{limits.max_query_chars:,} at most"
            )
    if k < 1 or offset < 0:
        raise BadInputError(
            f"k must be at least 1 and offset at least 0, not k={k}, offset={offset}"
        )
    if k + offset > limits.max_k:
        raise BadInputError(
            f"k + offset is {k + offset}; this server returns the first {limits.max_k} at most"
        )
    reader = state.reader
    started = time.perf_counter()
    hits, generation = reader.search_generation(
        list(queries),
        k + offset,
        mode=mode,
        filter=filter,
        group=group,
        keyword_syntax=keyword_syntax,
        hybrid_weight=hybrid_weight,
    )
    seconds = time.perf_counter() - started
    return SearchOutcome([h[offset:] for h in hits], generation, seconds)


def _state(request: Request) -> State:
    state: State = request.app.state.semsearch
    return state


@router.get(
    "/search",
    tags=["search"],
    summary="Search with one query",
    response_model=None,
    responses={200: {"model": SearchBody}, **_errors(400, 503)},
)
def search_get(
    request: Request,
    q: Annotated[str, Query(description="What to search for.")],
    k: Annotated[int, Query(description="How many results.")] = 10,
    offset: Annotated[int, Query(description="Results to skip (pagination).")] = 0,
    mode: Annotated[str | None, Query(description="hybrid (default), semantic or keyword.")] = None,
    since: Annotated[str | None, Query(description="Earliest date, inclusive.")] = None,
    until: Annotated[str | None, Query(description="Latest date, inclusive.")] = None,
    source: Annotated[list[str] | None, Query(description="Any of these sources.")] = None,
    tag: Annotated[list[str] | None, Query(description="At least one of these tags.")] = None,
    where: Annotated[
        list[str] | None, Query(description="Conditions: key=value, key>=value, key!=value ...")
    ] = None,
    filter: Annotated[str | None, Query(description="A JSON filter object.")] = None,
    group: Annotated[bool, Query(description="One hit per article, or chunks.")] = True,
    syntax: Annotated[Literal["text", "fts5"], Query(description="Keyword syntax.")] = "text",
) -> JSONResponse:
    """The k best articles for ``q``: exactly ``Hit.to_dict()`` for each, and timing."""
    spec = query_filter(since, until, source, tag, where, filter)
    outcome = run_search(
        _state(request),
        [q],
        k=k,
        offset=offset,
        mode=mode,
        filter=spec,
        group=group,
        keyword_syntax=syntax,
    )
    return JSONResponse(
        {
            "query": q,
            "mode": _mode(mode),
            "k": k,
            "offset": offset,
            "generation": outcome.generation,
            "took_ms": round(outcome.seconds * 1000, 3),
            "hits": [hit.to_dict() for hit in outcome.hits[0]],
        }
    )


@router.post(
    "/search",
    tags=["search"],
    summary="Search with one query or a batch, and the full filter",
    response_model=None,
    responses={200: {"model": SearchBody | BatchBody}, **_errors(400, 413, 422, 503)},
)
def search_post(request: Request, body: SearchRequest) -> JSONResponse:
    """One query as ``GET /search`` answers; a list of queries, one result each, all
    read from the same generation."""
    batch = isinstance(body.q, list)
    queries = body.q if isinstance(body.q, list) else [body.q]
    outcome = run_search(
        _state(request),
        queries,
        k=body.k,
        offset=body.offset,
        mode=body.mode,
        filter=parse_cli_filter(json_filter=json.dumps(body.filter), prefix="")
        if body.filter is not None
        else None,
        group=body.group,
        keyword_syntax=body.keyword_syntax,
        hybrid_weight=body.hybrid_weight,
    )
    head = {"mode": _mode(body.mode), "k": body.k, "offset": body.offset}
    timing = {"generation": outcome.generation, "took_ms": round(outcome.seconds * 1000, 3)}
    if not batch:
        hits = [hit.to_dict() for hit in outcome.hits[0]]
        return JSONResponse({"query": queries[0], **head, **timing, "hits": hits})
    results = [
        {"query": q, "hits": [hit.to_dict() for hit in hits]}
        for q, hits in zip(queries, outcome.hits, strict=True)
    ]
    return JSONResponse({**head, **timing, "results": results})


def query_filter(
    since: str | None,
    until: str | None,
    sources: Sequence[str] | None,
    tags: Sequence[str] | None,
    where: Sequence[str] | None,
    json_filter: str | None,
) -> dict[str, Any] | None:
    """A filter spec from the query parameters, read as ``semsearch query`` reads its options.

    Raises:
        BadInputError: for a malformed condition or filter.
    """
    conditions = [*(where or ()), *(f"source={json.dumps(s)}" for s in sources or () if s)]
    return parse_cli_filter(
        conditions,
        since=since or None,
        until=until or None,
        tags=[t for t in tags or () if t],
        json_filter=json_filter or None,
        prefix="",
    )


def _mode(mode: str | None) -> str:
    if mode is not None and mode not in MODES:
        raise BadInputError(f"unknown search mode {mode!r}; use one of {', '.join(MODES)}")
    return mode or "hybrid"


# -- articles --------------------------------------------------------------------


@router.get(
    "/articles/{article_id:path}",
    tags=["articles"],
    summary="One article, whole",
    response_model=None,
    responses={200: {"model": Article}, **_errors(404, 503)},
)
def article_get(request: Request, article_id: str) -> JSONResponse:
    """The stored article with this id (ids may hold slashes: ``world/nato.md``)."""
    article = _state(request).reader.get(article_id)
    if article is None:
        raise ApiError(404, "not_found", f"no article with id {article_id!r}")
    return JSONResponse(article.to_dict())


@router.post(
    "/articles",
    tags=["writes"],
    summary="Add or replace articles (needs the token)",
    response_model=None,
    responses={
        200: {"description": "``semsearch.AddResult.to_dict()`` and the new generation"},
        **_errors(401, 403, 413, 415, 422, 503),
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "Articles with the fields of `semsearch index -`: id, title, "
            "text (required), url, date, source, author, tags, and any other field as "
            "metadata. A JSON object, a JSON array of objects, or JSONL.",
            "content": {
                "application/json": {"schema": {"type": ["object", "array"]}},
                "application/x-ndjson": {"schema": {"type": "string"}},
            },
        }
    },
)
async def articles_post(
    request: Request,
    strict: Annotated[
        bool, Query(description="Write nothing if any article is skipped (422 instead).")
    ] = False,
    date_order: Annotated[
        str | None, Query(description="DMY or MDY: how to read numeric dates like 09/08/2024.")
    ] = None,
) -> JSONResponse:
    """Add articles as ``semsearch index -`` does: new ones added, changed ones
    replaced, unchanged ones left alone, bad rows skipped (and listed) without
    stopping the others; one generation, all or nothing."""
    state = _state(request)
    check_token(request, state.settings)
    if date_order is not None and date_order not in DATE_ORDERS:
        raise BadInputError(f"date_order {date_order!r} is not one of {', '.join(DATE_ORDERS)}")
    items = parse_articles(
        request.headers.get("content-type", ""), await request.body(), date_order
    )
    return await run_in_threadpool(_add, state, items, strict)


def _add(state: State, items: list[Article | Skipped], strict: bool) -> JSONResponse:
    skipped = [item for item in items if isinstance(item, Skipped)]
    if len(skipped) == len(items):
        raise ApiError(
            422,
            "malformed",
            f"no article to add: {skipped[0]}" if skipped else "no article to add",
            skipped=[s.to_dict() for s in skipped],
        )
    with state.writer() as index:
        try:
            result = index.add(items, strict=strict)
        except BadInputError as e:  # strict, and something was skipped: nothing written
            raise ApiError(
                422, "malformed", str(e), skipped=[s.to_dict() for s in skipped]
            ) from None
        generation = index.generation
    return JSONResponse({**result.to_dict(), "generation": generation})


def parse_articles(
    content_type: str, body: bytes, date_order: str | None = None
) -> list[Article | Skipped]:
    """The articles of a request body: JSON (an object or an array of them) or JSONL.

    Raises:
        ApiError: 415 for another content type; 422 for a body that is not JSON.
    """
    media = content_type.split(";")[0].strip().lower()
    if media == "application/json":
        try:
            value = json.loads(body.decode("utf-8"), strict=False)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ApiError(422, "malformed", f"the body is not JSON: {e}") from None
        records = value if isinstance(value, list) else [value]
        return list(first_of_each_id(read_records(records, "body", date_order=date_order)))
    if media in JSONL_TYPES:
        text = body.removeprefix(b"\xef\xbb\xbf").decode("utf-8", "surrogateescape")
        return list(first_of_each_id(read_jsonl(text, "body", date_order=date_order)))
    raise ApiError(
        415,
        "unsupported_media_type",
        f"send articles as application/json or {JSONL_TYPES[0]}, not {media or 'no type'}",
    )


@router.delete(
    "/articles/{article_id:path}",
    tags=["writes"],
    summary="Remove an article (needs the token)",
    response_model=None,
    responses={
        200: {"description": "The id removed and the new generation"},
        **_errors(401, 403, 404, 503),
    },
)
def article_delete(request: Request, article_id: str) -> JSONResponse:
    """Remove the article and all its chunks, in one generation."""
    state = _state(request)
    check_token(request, state.settings)
    with state.writer() as index:
        removed, _ = index.remove([article_id])
        generation = index.generation
    if not removed:
        raise ApiError(404, "not_found", f"no article with id {article_id!r}")
    return JSONResponse({"removed": removed, "generation": generation})


def check_token(request: Request, settings: ServeSettings) -> None:
    """Allow a write only with the server's bearer token, compared in constant time.

    Raises:
        ApiError: 403 on a read-only server; 401 without the right token.
    """
    if settings.token is None:
        raise ApiError(
            403,
            "read_only",
            "this server is read-only: start it with --token (or $SEMSEARCH_TOKEN) to allow writes",
        )
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    # Digests of equal length, so the comparison's time says nothing of the token.
    ok = hmac.compare_digest(
        hashlib.sha256(given.strip().encode("utf-8", "surrogateescape")).digest(),
        hashlib.sha256(settings.token.encode()).digest(),
    )
    if scheme.lower() != "bearer" or not given.strip():
        raise ApiError(
            401,
            "unauthorized",
            "writes need the header Authorization: Bearer TOKEN",
            {"WWW-Authenticate": "Bearer"},
        )
    if not ok:
        raise ApiError(
            401,
            "unauthorized",
            "wrong token: it is not this server's",
            {"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )


# -- the server ----------------------------------------------------------------------


@router.get("/info", tags=["server"], summary="What the index holds", response_model=None)
def info(request: Request) -> JSONResponse:
    """``semsearch.IndexInfo.to_dict()``, and the server's limits."""
    state = _state(request)
    data = state.reader.info().to_dict()
    s = state.settings
    data["server"] = {
        "read_only": s.token is None,
        "max_k": s.max_k,
        "max_query_chars": s.max_query_chars,
        "max_batch": s.max_batch,
        "max_body_bytes": s.max_body_bytes,
    }
    return JSONResponse(data)


@router.get("/healthz", tags=["server"], summary="Liveness: the process answers")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    tags=["server"],
    summary="Readiness: the index is open and the model loaded",
    response_model=None,
    responses=_errors(503),
)
def readyz(request: Request) -> JSONResponse:
    reader = _state(request).reader  # NotReady: 503 while loading, or why it failed
    reader.refresh()  # the generation the next search reads, not the last one read
    return JSONResponse({"status": "ready", "generation": reader.generation})


# HEAD too, for probes and monitors that ask it (one operation each in the schema: GET).
router.add_api_route("/healthz", healthz, methods=["HEAD"], include_in_schema=False)
router.add_api_route("/readyz", readyz, methods=["HEAD"], include_in_schema=False)

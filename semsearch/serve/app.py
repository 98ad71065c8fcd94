"""The ASGI application: routes, the error shape, headers, CORS and the body limit."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import __version__
from ..errors import BadInputError, LockedError
from .errors import ApiError, error_response
from .limits import BodyLimit
from .settings import ServeSettings
from .state import NotReady, State

log = logging.getLogger("semsearch.serve")

DESCRIPTION = """\
Search one semsearch index over HTTP: semantic, keyword (BM25) and hybrid
search with metadata filters, each response read from one whole committed
generation of the index (its number is in the response). Writes (`POST
/articles`, `DELETE /articles/{id}`) need the server's bearer token; without
one the server is read-only. Errors are JSON: `{"error": CODE, "detail": TEXT}`.
"""


def create_app(settings: ServeSettings) -> FastAPI:
    """The server's ASGI application for one index.

    The index is opened, and its query encoder loaded, in the background when
    the application starts (ASGI lifespan); ``/readyz`` answers 200 from then.

    Args:
        settings: the index, the write token and the limits.

    Returns:
        A FastAPI application (serve it with uvicorn, or test it with
        ``starlette.testclient.TestClient`` used as a context manager).
    """
    from . import api, pages

    state = State(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.start()
        yield
        state.close()

    app = FastAPI(
        title="semsearch",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.semsearch = state
    app.include_router(api.router)
    app.include_router(pages.router)

    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(BadInputError, _bad_input)
    app.add_exception_handler(LockedError, _locked)
    app.add_exception_handler(NotReady, _not_ready)
    app.add_exception_handler(Exception, _internal_error)

    # Outermost last: CORS (only if asked), then the body limit, then the headers.
    app.add_middleware(SecurityHeaders)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    if settings.cors:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors),
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
            max_age=600,
        )
    return app


def app_from_environment() -> FastAPI:
    """The application for uvicorn's worker processes (``--workers N``).

    Reads :class:`ServeSettings` from the environment ``semsearch serve`` set.
    """
    return create_app(ServeSettings.from_environment())


class SecurityHeaders:
    """Headers on every response: no MIME sniffing, no framing, no referrer sent on."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                for name, value in _HEADERS:
                    if name not in present:
                        headers.append((name, value))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)


_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
)


# -- errors: one JSON shape, the right status, never a traceback ---------------


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.code, exc.detail, exc.headers, **exc.extra)


_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    415: "unsupported_media_type",
    422: "malformed",
}


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _CODES.get(exc.status_code, "error")
    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    headers = exc.headers
    if exc.status_code == 404 and detail == "Not Found":
        detail = f"no such endpoint: {request.method} {request.url.path}"
    elif exc.status_code == 400 and detail == "There was an error parsing the body":
        # FastAPI's words for a body it cannot decode (not UTF-8, say): malformed.
        return error_response(422, "malformed", "the body could not be read as UTF-8 JSON")
    elif exc.status_code == 405:
        # The path exists for other methods: name them all (GET and POST /search
        # are separate routes, and Starlette names only the first one's).
        allowed = _allowed_methods(request)
        if allowed:
            headers = {**(headers or {}), "Allow": ", ".join(allowed)}
            detail = f"{request.method} is not allowed here; use {' or '.join(allowed)}"
    return error_response(exc.status_code, code, detail, headers)


def _allowed_methods(request: Request) -> list[str]:
    """The methods some route answers at this request's path (routes are asked, as
    the router asks them: included routers hold routes of their own)."""
    from starlette.routing import Match

    allowed = []
    for method in _METHODS:
        scope = {**request.scope, "method": method}
        if any(route.matches(scope)[0] == Match.FULL for route in request.app.routes):
            allowed.append(method)
    return allowed


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


async def _validation_error(request: Request, exc: Exception) -> Response:
    """A bad query parameter is a bad request (400). A body that is not JSON, is
    not an object, or does not fit the schema (a wrong type, a missing or unknown
    field) is malformed (422); one that is not JSON at all by its type, 415."""
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    first = errors[0] if errors else {}
    where = [str(part) for part in first.get("loc", ())]
    if where[:1] != ["body"]:
        name = ".".join(where[1:]) or "query"
        detail = f"{name}: {first.get('msg', 'invalid')}"
        if len(errors) > 1:
            detail += f" (and {len(errors) - 1} more)"
        return error_response(400, "bad_request", detail)
    kind = first.get("type", "")
    if kind == "json_invalid":
        why = (first.get("ctx") or {}).get("error", "invalid JSON")
        position = f" at character {where[1]}" if len(where) > 1 else ""
        return error_response(422, "malformed", f"the body is not JSON: {why}{position}")
    if len(where) == 1:  # the body as a whole: absent, or not an object
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media and "json" not in media:
            return error_response(
                415, _CODES[415], f"send the body as application/json, not {media}"
            )
        return error_response(422, "malformed", 'the body must be a JSON object: {"q": ...}')
    # A field: name the field as the request spells it, not the schema's alternatives.
    field = where[1]
    fields = {e["loc"][1] for e in errors if len(e.get("loc", ())) > 1}
    expected = _EXPECTED.get(field)
    if expected and kind != "missing" and kind != "extra_forbidden":
        detail = f"{field}: must be {expected}"
    else:
        detail = f"{field}: {first.get('msg', 'invalid')}"
    if len(fields) > 1:
        detail += f" (and {len(fields) - 1} more field{'s' if len(fields) > 2 else ''})"
    return error_response(422, "malformed", detail)


_EXPECTED = {"q": "a query (a string) or a list of queries"}


async def _bad_input(request: Request, exc: Exception) -> Response:
    return error_response(400, "bad_request", str(exc))


async def _locked(request: Request, exc: Exception) -> Response:
    # Who holds the lock (its pid, host and command line) is for the server's log,
    # not for a client; nor is the CLI's advice.
    log.warning("semsearch: %s %s refused: %s", request.method, request.url.path, exc)
    return error_response(
        503,
        "locked",
        "another process or request is writing to this index; retry after Retry-After seconds",
        {"Retry-After": "5"},
    )


async def _not_ready(request: Request, exc: Exception) -> Response:
    if isinstance(exc, NotReady) and exc.failed:
        # Retrying will not help: no Retry-After, and a code of its own.
        return error_response(503, "open_failed", f"cannot serve this index: {exc}")
    return error_response(503, "not_ready", str(exc), {"Retry-After": "1"})


async def _internal_error(request: Request, exc: Exception) -> Response:
    # Logged by the server (uvicorn prints the traceback); never sent to the client.
    log.error("semsearch: %s %s failed: %r", request.method, request.url.path, exc)
    return error_response(500, "internal", "internal error; the server's log has the details")

"""The search page and the article page: server-rendered HTML, no script.

Everything shown comes from articles, which are untrusted input: Jinja2
escapes every value (autoescape), links are made only of ``http(s)`` URLs, and
the Content-Security-Policy forbids scripts, so even a missed escape could
not run one.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Annotated, Any
from urllib.parse import urlencode, urlsplit

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, PackageLoader, select_autoescape

from ..errors import BadInputError
from ..records import Hit
from ..search import MODES
from .api import query_filter, run_search
from .state import NotReady, State

router = APIRouter(include_in_schema=False)

_templates = Jinja2Templates(
    env=Environment(
        loader=PackageLoader("semsearch.serve", "templates"),
        autoescape=select_autoescape(default=True),
    )
)
_STYLE = files("semsearch.serve").joinpath("templates/style.css").read_bytes()

CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "base-uri 'none'; frame-ancestors 'none'"
)


@router.api_route("/style.css", methods=["GET", "HEAD"])
def style() -> Response:
    return Response(
        _STYLE, media_type="text/css", headers={"Cache-Control": "public, max-age=3600"}
    )


@router.api_route("/", methods=["GET", "HEAD"], response_class=HTMLResponse)
def search_page(
    request: Request,
    q: str = "",
    mode: str = "hybrid",
    since: str = "",
    until: str = "",
    source: str = "",
    tag: str = "",
    page: Annotated[str, Query()] = "1",
) -> Response:
    """The search page: the form, and a page of results when there is a query."""
    state: State = request.app.state.semsearch
    form = {"q": q, "mode": mode, "since": since, "until": until, "source": source, "tag": tag}
    context: dict[str, Any] = {"form": form, "modes": MODES, "hits": [], "error": None}
    status = 200
    if q.strip():
        try:
            number = _page_number(page)
            per_page = state.settings.per_page
            if number * per_page > state.settings.max_k:
                raise BadInputError(
                    f"page {number} is past the first {state.settings.max_k} results this "
                    "server shows"
                )
            spec = query_filter(since, until, [source], [tag], None, None)
            offset = (number - 1) * per_page
            # One more than a page, when allowed, says whether there is a next page.
            k = min(per_page + 1, state.settings.max_k - offset)
            outcome = run_search(state, [q], k=k, offset=offset, mode=mode, filter=spec)
            hits = outcome.hits[0]
            context.update(
                hits=[_hit_view(h, form, number) for h in hits[:per_page]],
                first=offset + 1,
                page=number,
                generation=outcome.generation,
                took_ms=outcome.seconds * 1000,
                newer=_link(form, number - 1) if number > 1 else None,
                older=_link(form, number + 1) if len(hits) > per_page else None,
            )
        except BadInputError as e:
            context["error"], status = str(e), 400
        except NotReady as e:
            context["error"], status = f"not ready: {e}", 503
    return _render(request, "search.html", context, status)


@router.api_route("/article", methods=["GET", "HEAD"], response_class=HTMLResponse)
def article_page(
    request: Request,
    id: str = "",
    q: str = "",
    mode: str = "",
    since: str = "",
    until: str = "",
    source: str = "",
    tag: str = "",
    page: str = "",
) -> Response:
    """One article's full text, by ``?id=``; the other fields lead back to the results."""
    state: State = request.app.state.semsearch
    form = {"q": q, "mode": mode, "since": since, "until": until, "source": source, "tag": tag}
    back = _link(form, page) if q else "/"
    try:
        article = state.reader.get(id) if id else None
    except NotReady as e:
        return _render(
            request, "article.html", {"error": f"not ready: {e}", "back": back, "form": form}, 503
        )
    if article is None:
        missing = {"error": f"no article with id {id!r}", "back": back, "form": form}
        return _render(request, "article.html", missing, 404)
    paragraphs = [p.strip() for p in article.text.split("\n\n") if p.strip()]
    context: dict[str, Any] = {
        "article": article,
        "href": safe_href(article.url),
        "paragraphs": paragraphs,
        "back": back,
        "form": form,
        "error": None,
    }
    return _render(request, "article.html", context, 200)


def safe_href(url: str | None) -> str | None:
    """``url`` if it is an absolute http(s) URL, else None (no ``javascript:`` link)."""
    if not url:
        return None
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return None
    return url.strip()


def _hit_view(hit: Hit, form: dict[str, str], page: int) -> dict[str, Any]:
    return {
        "hit": hit,
        "href": safe_href(hit.url),
        # The article's page carries the search, so that its back link returns to it.
        "article": _link(form, page, "/article", id=hit.article_id),
        "snippet": hit.snippet(320),
    }


def _page_number(page: str) -> int:
    try:
        number = int(page)
    except ValueError:
        raise BadInputError(f"page must be a whole number, not {page!r}") from None
    if number < 1:
        raise BadInputError(f"page must be at least 1, not {number}")
    return number


def _link(form: dict[str, str], page: int | str, path: str = "/", **first: str) -> str:
    """``path`` with ``first``, the form's filled fields and the page as its query."""
    given = {k: v for k, v in form.items() if v}
    return f"{path}?" + urlencode({**first, **given, **({"page": page} if page else {})})


def _render(request: Request, name: str, context: dict[str, Any], status: int) -> Response:
    response = _templates.TemplateResponse(request, name, context, status_code=status)
    response.headers["Content-Security-Policy"] = CSP
    return response

"""``semsearch serve``: an HTTP API and a search page over one index folder.

An optional extra (``pip install "semsearch[serve]"``): FastAPI (on
Starlette) for routing, request validation and the OpenAPI schema, Jinja2 for
the server-rendered page, uvicorn to serve it. Nothing here is imported by
``import semsearch`` or by the other commands.

The rooms:

- ``settings``: :class:`ServeSettings`, the limits and switches, and how they
  travel to uvicorn's worker processes (an environment variable).
- ``state``: what one worker process holds: one shared
  :class:`~semsearch.reader.Reader` (opened, and its query encoder loaded, in
  the background at start-up: ``/readyz`` says when), and the writer used by
  the write endpoints, one write at a time.
- ``api``: the JSON endpoints and the error shape ``{"error", "detail"}``.
- ``pages``: the search page and the article page (HTML, escaped, no script).
- ``limits``: the request body limit (ASGI middleware).

Readers see whole generations: each search runs in one snapshot of the index
and reports its generation number, and a commit by any process (the CLI, a
pipeline, this server's own write endpoints) is picked up by the next search.
"""

from __future__ import annotations

from .app import app_from_environment, create_app
from .settings import ServeSettings

__all__ = ["ServeSettings", "app_from_environment", "create_app"]

"""``semsearch serve``: the HTTP API and search page (the ``[serve]`` extra)."""

from __future__ import annotations

import copy
import ipaddress
import os
import socket
from pathlib import Path
from typing import Any

import click

from ..config import environment
from ..errors import BadInputError, MissingDependencyError
from .app import CliError, cli
from .options import index_option

_SERVE_INSTALL = 'pip install "semsearch[serve]"'


@cli.command("serve")
@index_option
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on. The default answers this machine only; 0.0.0.0 "
    "answers every network the machine is on (put it behind a proxy with TLS).",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8000,
    show_default=True,
    help="TCP port to listen on.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Server processes, each with its own reader and model (~200 MB each). "
    "One per CPU core serves the most queries a second.",
)
@click.option(
    "--token",
    envvar="SEMSEARCH_TOKEN",
    default=None,
    help="Allow writes (POST /articles, DELETE /articles/ID) to clients sending "
    "'Authorization: Bearer TOKEN'; at least 16 characters. Without it the server "
    "is read-only. Prefer the environment variable: an option shows in 'ps'. "
    "[env: SEMSEARCH_TOKEN]",
)
@click.option(
    "--cors",
    "cors",
    multiple=True,
    metavar="ORIGIN",
    help="Let web pages from ORIGIN (e.g. https://news.example.com) call the API; "
    "repeat for several. Default: no cross-origin access.",
)
@click.option(
    "--max-k",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="Most results a query may reach: k + offset over this is refused (HTTP 400); "
    "the search page shows this many, in pages of 10.",
)
@click.option(
    "--max-query-chars",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    help="Longest query accepted, in characters; a longer one is refused (HTTP 400).",
)
@click.option(
    "--max-batch",
    type=click.IntRange(min=1),
    default=32,
    show_default=True,
    help="Most queries in one POST /search.",
)
@click.option(
    "--max-body",
    default="16MB",
    show_default=True,
    help="Largest request body, e.g. 16MB or 512KiB; a larger one is refused (HTTP 413).",
)
@click.option(
    "--access-log/--no-access-log",
    default=True,
    show_default=True,
    help="Log one line per request on stderr.",
)
@click.option(
    "--log-level",
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
    default="info",
    show_default=True,
    help="How much the server logs.",
)
def serve_command(
    index_dir: Path | None,
    host: str,
    port: int,
    workers: int,
    token: str | None,
    cors: tuple[str, ...],
    max_k: int,
    max_query_chars: int,
    max_batch: int,
    max_body: str,
    access_log: bool,
    log_level: str,
) -> None:
    """Serve the index over HTTP: a JSON API and a search page, until Ctrl-C.

    Open http://127.0.0.1:8000/ for the search page, /docs for the API
    (GET/POST /search, GET /articles/ID, /info, /healthz, /readyz), and
    /openapi.json for its schema. Every response is read from one whole
    committed generation, and writes made meanwhile (by `semsearch index`, a
    pipeline, or POST /articles) are served from the next search on, without
    a restart.

    \b
    Examples:
      semsearch serve --index indexes/news
      curl 'http://127.0.0.1:8000/search?q=NATO+Indo-Pacific&k=5'
      SEMSEARCH_TOKEN=$(cat token) semsearch serve --workers 2
      curl -H "Authorization: Bearer $(cat token)" -H 'Content-Type: application/x-ndjson' \\
           --data-binary @new.jsonl http://127.0.0.1:8000/articles
    """
    try:
        import uvicorn

        from ..serve import ServeSettings
    except ImportError as e:
        raise MissingDependencyError(
            f"semsearch serve needs the [serve] extra ({e.name} is missing): {_SERVE_INSTALL}"
        ) from None
    from ..config import parse_bytes
    from ..index import Index

    folder = index_dir or environment().index_dir
    if not Index.exists(folder):
        raise CliError(
            f"no index at {folder}: make one with semsearch index PATHS --index {folder}"
        )
    try:
        body_limit = parse_bytes(max_body)
    except BadInputError as e:
        message = str(e).replace("memory budget", "size")
        raise click.BadParameter(message, param_hint="--max-body") from None
    settings = ServeSettings(
        index=folder.resolve(),
        token=token or None,
        cors=cors,
        max_k=max_k,
        max_query_chars=max_query_chars,
        max_batch=max_batch,
        max_body_bytes=body_limit,
    )
    if not _is_loopback(host):
        click.echo(
            f"warning: listening on {host}: anyone who can reach this machine can search "
            "the index" + (" and, with the token, write to it" if token else ""),
            err=True,
        )
    _check_port(host, port)
    # The workers are new processes: the settings travel in their environment.
    os.environ.update(settings.to_environment())
    uvicorn.run(
        "semsearch.serve:app_from_environment",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        access_log=access_log,
        log_level=log_level,
        log_config=_log_config(log_level),
        server_header=False,
    )


def _log_config(log_level: str) -> dict[str, Any]:
    """uvicorn's logging, with semsearch's own messages (the index served, its
    generation, a failed open) printed alongside at the same level."""
    from uvicorn.config import LOG_LEVELS, LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["semsearch"] = {
        "handlers": ["default"],
        "level": LOG_LEVELS[log_level],
        "propagate": False,
    }
    return config


def _check_port(host: str, port: int) -> None:
    """Fail in one line, before loading anything, if the address cannot be listened on
    (uvicorn would log it and exit with status 3, which here means skipped inputs).

    Raises:
        CliError: the port is taken, or the host is not this machine's.
    """
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        with socket.socket(family, kind, proto) as probe:
            # As uvicorn binds: a port in TIME_WAIT after a restart is not "in use".
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as e:
        why = e.strerror or str(e)
        raise CliError(f"cannot listen on {host}:{port}: {why}") from None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False

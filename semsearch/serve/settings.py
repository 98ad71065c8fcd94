"""What a server is started with: the index, the write token, CORS and the limits."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import BadInputError

ENV_TOKEN = "SEMSEARCH_TOKEN"
"""The write token, when not given as ``--token`` (safer: not seen in ``ps``)."""

ENV_SETTINGS = "SEMSEARCH_SERVE_SETTINGS"
"""How settings reach uvicorn's worker processes: JSON, every field but the token."""

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
MAX_K = 100
MAX_QUERY_CHARS = 1000
MAX_BATCH = 32
MAX_BODY_BYTES = 16 * 1024 * 1024
PER_PAGE = 10


@dataclass(frozen=True)
class ServeSettings:
    """A server's settings; every limit is checked on each request.

    Attributes:
        index: the index folder (opened read-only; written only through the
            write endpoints, with a token).
        token: the bearer token that allows ``POST /articles`` and ``DELETE
            /articles/{id}``; None serves read-only.
        cors: origins allowed to call the API from a browser (none: CORS off).
        max_k: the most results one query may ask for, ``offset`` included.
        max_query_chars: the longest query text, in characters.
        max_batch: the most queries in one ``POST /search``.
        max_body_bytes: the largest request body, in bytes (413 beyond).
        per_page: results on one page of the search page.
    """

    index: Path
    token: str | None = field(default=None, repr=False)
    cors: tuple[str, ...] = ()
    max_k: int = MAX_K
    max_query_chars: int = MAX_QUERY_CHARS
    max_batch: int = MAX_BATCH
    max_body_bytes: int = MAX_BODY_BYTES
    per_page: int = PER_PAGE

    def __post_init__(self) -> None:
        for name in ("max_k", "max_query_chars", "max_batch", "max_body_bytes", "per_page"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise BadInputError(
                    f"serve setting {name} must be a positive integer, not {value!r}"
                )
        if self.token is not None and len(self.token) < 16:
            raise BadInputError(
                "the write token must be at least 16 characters; make one with "
                "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
            )

    def to_environment(self) -> dict[str, str]:
        """The environment that gives uvicorn's workers these settings."""
        values: dict[str, Any] = asdict(self)
        values["index"] = str(self.index)
        values["cors"] = list(self.cors)
        token = values.pop("token")
        env = {ENV_SETTINGS: json.dumps(values)}
        if token is not None:
            env[ENV_TOKEN] = token
        return env

    @classmethod
    def from_environment(cls) -> ServeSettings:
        """The settings :meth:`to_environment` wrote (in a worker process).

        Raises:
            BadInputError: if the variable is missing or malformed.
        """
        raw = os.environ.get(ENV_SETTINGS)
        if raw is None:
            raise BadInputError(
                f"${ENV_SETTINGS} is not set: start the server with semsearch serve"
            )
        try:
            values = json.loads(raw)
        except json.JSONDecodeError as e:
            raise BadInputError(f"${ENV_SETTINGS} is not JSON: {e.msg}") from None
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in values.items() if k in known}
        values["index"] = Path(values["index"])
        values["cors"] = tuple(values.get("cors", ()))
        values["token"] = os.environ.get(ENV_TOKEN) or None
        return cls(**values)

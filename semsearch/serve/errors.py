"""The API's error: ``{"error": CODE, "detail": TEXT}`` with the right status."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi.responses import JSONResponse


class ApiError(Exception):
    """An error response: ``status``, a stable ``code`` and a one-line ``detail``."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = dict(headers or {})
        self.extra = extra


def error_response(
    status: int,
    code: str,
    detail: str,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    """The JSON error response (``extra`` keys after ``error`` and ``detail``)."""
    return JSONResponse(
        {"error": code, "detail": detail, **extra}, status_code=status, headers=dict(headers or {})
    )

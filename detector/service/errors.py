"""Every refusal the service makes, and ONE table from exception class to HTTP reply.

    ApiError                  a refusal about HTTP itself (auth, body framing, load), not the media
    ├── Unauthorized          401: missing or unknown bearer token
    ├── Forbidden             403: the token lacks the route's scope
    ├── PathRefused           403: a decision names a file outside --media-root (or there is none)
    ├── UnsupportedMediaType  415: a body that is neither media nor multipart form data
    ├── NotReady, Busy        503 + Retry-After: still loading / too many requests in flight
    ├── BadMultipart, ClientDisconnect                   400
    ├── MissingFile, MissingField, ReferenceNotAdded, InvalidParameter   422
    └── UploadTooLarge, FormFieldTooLarge, TooManyFormFields, RequestTimeout, LimitExceeded
                              a limit: the status is LIMIT_STATUS[limit]

Errors of the `detector` and `index` packages (`MediaLimitError`, `ReferenceNotFoundError`, ...)
are rendered by the same table, so a route raises the domain error and never picks a status.

Why: a status code chosen at each raise drifts (the same condition answered two ways); one table,
looked up along the exception's MRO, is read and tested in one place (tests/detector/
test_service_errors.py). Every reply is `{"error": ClassName, "message": str(exc)}` plus `"limit"`
for a limit, and the `x-mamori-error` header that the metrics count by.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fastapi.responses import JSONResponse

from detector.errors import ConfigError, DetectorError, MediaLimitError, UnreadableMediaError
from index import IndexLockedError, IndexStoreError, ReferenceNotFoundError

__all__ = ["ERROR_TABLE", "LIMIT_STATUS", "ApiError", "BadMultipart", "Busy", "ClientDisconnect", "ErrorRule",
           "Forbidden", "FormFieldTooLarge", "InvalidParameter", "LimitExceeded", "MissingField", "MissingFile",
           "NotReady", "PathRefused", "ReferenceNotAdded", "RequestTimeout", "TooManyFormFields", "Unauthorized",
           "UnsupportedMediaType", "UploadTooLarge", "error_response", "rule_for"]

class ApiError(Exception):
    """Root of the service's own refusals; the message is the reply's `message`."""


class Unauthorized(ApiError):
    """Missing or unknown bearer token."""


class Forbidden(ApiError):
    """The token lacks the scope the route needs."""


class PathRefused(ApiError):
    """A decision over HTTP that names a file outside the server's --media-root, or a server without one."""


class UnsupportedMediaType(ApiError):
    """A content type that is neither an image/video/octet-stream body nor multipart form data."""


class NotReady(ApiError):
    """The index and model are still loading, or loading failed."""


class Busy(ApiError):
    """`workers + queue` requests are already in flight."""


class BadMultipart(ApiError):
    """A multipart body that cannot be parsed."""


class ClientDisconnect(ApiError):
    """The client closed the connection before the upload ended."""


class MissingFile(ApiError):
    """A multipart body without a `file` part."""


class MissingField(ApiError):
    """A required form field is absent or blank."""


class ReferenceNotAdded(ApiError):
    """An uploaded reference that the index refused (no usable region, ...)."""


class InvalidParameter(ApiError):
    """A query or path parameter that fails validation."""


class UploadTooLarge(ApiError):
    """A body over max_upload_mb."""


class FormFieldTooLarge(ApiError):
    """A multipart text field over MAX_FIELD_BYTES."""


class TooManyFormFields(ApiError):
    """A form of more than MAX_FORM_FIELDS parts."""


class RequestTimeout(ApiError):
    """An upload that did not arrive within request_timeout."""


class LimitExceeded(ApiError):
    """A query asking for more than the server allows (max_frames)."""


#: The status of a refusal that names a limit (docs/http.md, "Limits").
LIMIT_STATUS: Mapping[str, int] = {
    "max_upload_mb": 413, "max_duration": 413, "max_frames_total": 413, "max_pixels": 413,
    "max_field_bytes": 413, "max_form_fields": 413, "max_frames": 422, "request_timeout": 408,
}


@dataclass(frozen=True)
class ErrorRule:
    """One row of the table: `exc` and its subclasses get `status`, `limit` and `headers`."""

    exc: type[Exception]
    status: int
    limit: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


def _limit(exc: type[ApiError], limit: str) -> ErrorRule:
    return ErrorRule(exc, LIMIT_STATUS[limit], limit)


#: Looked up along the exception's MRO: the most specific class listed wins.
ERROR_TABLE: tuple[ErrorRule, ...] = (
    ErrorRule(Unauthorized, 401, headers={"WWW-Authenticate": "Bearer"}),
    ErrorRule(Forbidden, 403),
    ErrorRule(PathRefused, 403),
    ErrorRule(UnsupportedMediaType, 415),
    ErrorRule(NotReady, 503, headers={"Retry-After": "5"}),
    ErrorRule(Busy, 503, headers={"Retry-After": "2"}),
    ErrorRule(BadMultipart, 400),
    ErrorRule(ClientDisconnect, 400),
    ErrorRule(MissingFile, 422),
    ErrorRule(MissingField, 422),
    ErrorRule(ReferenceNotAdded, 422),
    ErrorRule(InvalidParameter, 422),
    _limit(UploadTooLarge, "max_upload_mb"),
    _limit(FormFieldTooLarge, "max_field_bytes"),
    _limit(TooManyFormFields, "max_form_fields"),
    _limit(RequestTimeout, "request_timeout"),
    _limit(LimitExceeded, "max_frames"),
    ErrorRule(MediaLimitError, 413),  # the limit is the exception's own: status from LIMIT_STATUS
    ErrorRule(UnreadableMediaError, 422),
    ErrorRule(ConfigError, 422),
    ErrorRule(DetectorError, 400),
    ErrorRule(ReferenceNotFoundError, 404),
    ErrorRule(IndexLockedError, 409),
    ErrorRule(IndexStoreError, 400),
)
_BY_CLASS = {rule.exc: rule for rule in ERROR_TABLE}
assert len(_BY_CLASS) == len(ERROR_TABLE), "a class listed twice in ERROR_TABLE"


def rule_for(exc: BaseException) -> ErrorRule | None:
    """The table's row for `exc` (its most specific listed class), or None: an unexpected error."""
    return next((_BY_CLASS[cls] for cls in type(exc).__mro__ if cls in _BY_CLASS), None)


def error_response(exc: BaseException) -> JSONResponse:
    """The JSON reply for `exc`: its row's status, or 500 with a generic message for an exception
    the table does not list (a bug: the caller logs it with its traceback)."""
    rule = rule_for(exc)
    if rule is None:
        return JSONResponse({"error": type(exc).__name__, "message": "internal error"}, status_code=500)
    status, limit = rule.status, rule.limit
    if isinstance(exc, MediaLimitError):
        status, limit = LIMIT_STATUS.get(exc.limit, rule.status), exc.limit
    body: dict[str, Any] = {"error": type(exc).__name__, "message": str(exc)}
    if limit:
        body["limit"] = limit
    return JSONResponse(body, status_code=status, headers={**rule.headers, "x-mamori-error": type(exc).__name__})

"""Receiving an upload safely: streamed to a temporary folder, never held whole in memory.

`receive_upload` reads the request body chunk by chunk and refuses, with an `ApiError` naming the
limit, a body over `max_bytes` (413; at once when Content-Length already says so), a client slower
than the deadline (408), a content type that is neither an image/video/octet-stream body nor
multipart form data (415), a multipart body without a `file` part (422), and a client that goes
away mid-body (400). Multipart bodies are parsed while they stream (python-multipart), the file
part written straight to disk. The caller owns the folder and removes it (`tempfile.TemporaryDirectory`).
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import FormParser
from starlette.requests import ClientDisconnect, Request

__all__ = ["RAW_TYPES", "ApiError", "Upload", "receive_upload"]

#: Content types accepted as a raw body (besides multipart/form-data with a `file` part).
RAW_TYPES = ("image/", "video/", "application/octet-stream")
_MAX_FIELD_BYTES = 64 * 1024


class ApiError(Exception):
    """A refusal with an HTTP status, an error name and, for limits, the limit's name."""

    def __init__(self, status: int, error: str, message: str, *, limit: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.error, self.limit, self.headers = status, error, limit, headers or {}


@dataclass
class Upload:
    """A received body: the file on disk, its client-side name, and any text form fields."""

    path: Path
    filename: str
    size: int
    fields: dict[str, str] = field(default_factory=dict)


class _RawSink:
    def __init__(self, folder: Path, filename: str):
        self.path = folder / "upload"
        self.filename = filename
        self._fh = open(self.path, "wb")  # noqa: SIM115 - closed in finish()

    def write(self, chunk: bytes) -> None:
        self._fh.write(chunk)

    def finish(self, size: int) -> Upload:
        self._fh.close()
        return Upload(self.path, self.filename, size)

    def close(self) -> None:
        self._fh.close()


class _MultipartSink:
    def __init__(self, folder: Path, content_type: str):
        self.fields: dict[str, str] = {}
        self.files: list[Any] = []
        self.parser = FormParser(
            content_type.split(";")[0].strip(), self._on_field, self.files.append,
            boundary=_boundary(content_type),
            config={"UPLOAD_DIR": str(folder), "MAX_MEMORY_FILE_SIZE": 0, "UPLOAD_DELETE_TMP": False,
                    "UPLOAD_KEEP_EXTENSIONS": False, "MAX_FIELD_SIZE": _MAX_FIELD_BYTES, "MAX_FIELDS": 32},
        )

    def _on_field(self, f: Any) -> None:
        if f.field_name is not None:
            value = f.value.decode("utf-8", "replace") if f.value is not None else ""
            self.fields[f.field_name.decode("utf-8", "replace")] = value

    def write(self, chunk: bytes) -> None:
        try:
            self.parser.write(chunk)
        except FormParserError as exc:
            raise ApiError(400, "BadMultipart", f"malformed multipart body: {exc}") from exc

    def finish(self, size: int) -> Upload:
        try:
            self.parser.finalize()
        except FormParserError as exc:
            raise ApiError(400, "BadMultipart", f"malformed multipart body: {exc}") from exc
        self.close()
        part = next((f for f in self.files if f.field_name == b"file"), None)
        if part is None:
            raise ApiError(422, "MissingFile", "multipart body has no `file` part")
        path = part.actual_file_name
        if path is None:  # an empty part never reached the disk
            raise ApiError(422, "UnreadableMediaError", "the uploaded file is empty (0 bytes)")
        name = (part.file_name or b"upload").decode("utf-8", "replace")
        return Upload(Path(os.fsdecode(path)), os.path.basename(name) or "upload", part.size, self.fields)

    def close(self) -> None:
        for f in self.files:
            f.close()


def _boundary(content_type: str) -> bytes:
    for piece in content_type.split(";")[1:]:
        key, _, value = piece.strip().partition("=")
        if key.lower() == "boundary" and value:
            return value.strip('"').encode("latin-1")
    raise ApiError(400, "BadMultipart", "multipart/form-data without a boundary")


async def receive_upload(request: Request, folder: Path, *, max_bytes: int, deadline: float,
                         filename: str = "upload") -> Upload:
    """Stream the request body into `folder` (see the module docstring for every refusal)."""
    ctype = request.headers.get("content-type", "")
    mime = ctype.split(";")[0].strip().lower()
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise ApiError(413, "UploadTooLarge", f"upload of {int(declared):,} bytes exceeds max_upload_mb "
                       f"({max_bytes / 2**20:g} MiB)", limit="max_upload_mb")
    sink: _RawSink | _MultipartSink
    if mime == "multipart/form-data":
        sink = _MultipartSink(folder, ctype)
    elif mime.startswith(RAW_TYPES):
        sink = _RawSink(folder, filename)
    else:
        raise ApiError(415, "UnsupportedMediaType", f"content type {mime or 'none'!r} is not accepted: send an "
                       "image/*, video/* or application/octet-stream body, or multipart/form-data with a `file` part")
    loop = asyncio.get_running_loop()
    size = 0
    chunks = request.stream().__aiter__()
    try:
        while True:
            left = deadline - loop.time()
            if left <= 0:
                raise TimeoutError
            try:
                chunk = await asyncio.wait_for(chunks.__anext__(), timeout=left)
            except StopAsyncIteration:
                break
            size += len(chunk)
            if size > max_bytes:
                raise ApiError(413, "UploadTooLarge", f"upload exceeds max_upload_mb ({max_bytes / 2**20:g} MiB)",
                               limit="max_upload_mb")
            sink.write(chunk)
        if size == 0:
            raise ApiError(422, "UnreadableMediaError", "empty request body (0 bytes)")
        return sink.finish(size)
    except TimeoutError as exc:
        raise ApiError(408, "RequestTimeout", "the upload did not arrive within request_timeout",
                       limit="request_timeout") from exc
    except ClientDisconnect as exc:
        raise ApiError(400, "ClientDisconnect", "the client closed the connection before the upload ended") from exc
    finally:
        sink.close()

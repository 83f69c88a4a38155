"""Receiving an upload safely: streamed to a temporary folder, never held whole in memory.

`receive_upload` reads the request body chunk by chunk and refuses (the statuses are in
`detector.service.errors.ERROR_TABLE`) a body over `max_bytes` (`UploadTooLarge`; at once when
Content-Length already says so), a client slower than the deadline (`RequestTimeout`), a content
type that is neither an image/video/octet-stream body nor multipart form data
(`UnsupportedMediaType`), an empty body (`UnreadableMediaError`), a multipart body without a `file`
part (`MissingFile`), and a client that goes away mid-body (`ClientDisconnect`). Multipart bodies
are parsed while they stream (python-multipart), the file part written straight to disk; a text
field over MAX_FIELD_BYTES (`FormFieldTooLarge`) or a form of more than MAX_FORM_FIELDS parts
(`TooManyFormFields`) is refused. The caller owns the folder and removes it
(`tempfile.TemporaryDirectory`).
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from python_multipart.decoders import Base64Decoder, QuotedPrintableDecoder
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect as _Disconnected
from starlette.requests import Request

from detector.errors import UnreadableMediaError
from detector.service.errors import (
    BadMultipart,
    ClientDisconnect,
    FormFieldTooLarge,
    MissingFile,
    RequestTimeout,
    TooManyFormFields,
    UnsupportedMediaType,
    UploadTooLarge,
)

__all__ = ["MAX_FIELD_BYTES", "MAX_FORM_FIELDS", "RAW_TYPES", "Upload", "receive_upload"]

#: Content types accepted as a raw body (besides multipart/form-data with a `file` part).
RAW_TYPES = ("image/", "video/", "application/octet-stream")
#: A multipart text field may hold this many bytes (limit `max_field_bytes`) ...
MAX_FIELD_BYTES = 64 * 1024
#: ... and a form this many parts, the `file` part included (limit `max_form_fields`).
MAX_FORM_FIELDS = 32


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


class _FieldPart:
    """A text field, held in memory up to MAX_FIELD_BYTES."""

    def __init__(self, name: str):
        self.name, self.value = name, bytearray()

    def write(self, data: bytes) -> int:
        if len(self.value) + len(data) > MAX_FIELD_BYTES:
            raise FormFieldTooLarge(f"form field {self.name[:64]!r} is over the "
                                    f"{MAX_FIELD_BYTES // 1024} KiB a form field may hold")
        self.value += data
        return len(data)

    def finalize(self) -> None:
        pass


class _FilePart:
    """The `file` part, written straight to disk (`done` once its end arrived)."""

    def __init__(self, path: Path, filename: str):
        self.path, self.filename, self.size, self.done = path, filename, 0, False
        self._fh = open(path, "wb")  # noqa: SIM115 - closed in finalize() or close()

    def write(self, data: bytes) -> int:
        self.size += self._fh.write(data)
        return len(data)

    def finalize(self) -> None:
        self._fh.close()
        self.done = True

    def close(self) -> None:
        self._fh.close()


class _Dropped:
    """Any other file part: read and thrown away."""

    def write(self, data: bytes) -> int:
        return len(data)

    def finalize(self) -> None:
        pass


class _MultipartSink:
    """multipart/form-data parsed while it streams (python-multipart's part parser): the first
    `file` part goes to disk, other file parts are dropped, text fields are kept in memory, each
    up to MAX_FIELD_BYTES, with at most MAX_FORM_FIELDS parts in all (python-multipart's own
    field limits apply to urlencoded forms only)."""

    def __init__(self, folder: Path, content_type: str):
        self.folder = folder
        self.fields: dict[str, str] = {}
        self.file: _FilePart | None = None
        self.parts = 0
        self._part: _FieldPart | _FilePart | _Dropped | None = None
        self._writer: Any = None  # the part, or a transfer-encoding decoder in front of it
        self._headers: dict[bytes, bytes] = {}
        self._hname, self._hvalue = bytearray(), bytearray()
        callbacks: Any = {
            "on_part_begin": self._headers.clear, "on_header_field": self._on_header_field,
            "on_header_value": self._on_header_value, "on_header_end": self._on_header_end,
            "on_headers_finished": self._begin_part, "on_part_data": self._on_part_data,
            "on_part_end": self._end_part,
        }
        self.parser = MultipartParser(_boundary(content_type), callbacks)

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._hname += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._hvalue += data[start:end]

    def _on_header_end(self) -> None:
        self._headers[bytes(self._hname).lower()] = bytes(self._hvalue).strip(b" \t")
        self._hname.clear()
        self._hvalue.clear()

    def _begin_part(self) -> None:
        self.parts += 1
        if self.parts > MAX_FORM_FIELDS:
            raise TooManyFormFields(f"the form has more than {MAX_FORM_FIELDS} fields")
        _, options = parse_options_header(self._headers.get(b"content-disposition"))
        name, filename = options.get(b"name"), options.get(b"filename")
        if name is None:
            raise BadMultipart("malformed multipart body: a part without a name")
        if filename is None:
            self._part = _FieldPart(name.decode("utf-8", "replace"))
        elif name == b"file" and self.file is None:
            self._part = self.file = _FilePart(self.folder / "file", filename.decode("utf-8", "replace"))
        else:
            self._part = _Dropped()
        cte = self._headers.get(b"content-transfer-encoding", b"7bit").lower()
        if cte == b"base64":
            self._writer = Base64Decoder(self._part)
        elif cte == b"quoted-printable":
            self._writer = QuotedPrintableDecoder(self._part)
        else:
            self._writer = self._part

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        self._writer.write(data[start:end])

    def _end_part(self) -> None:
        self._writer.finalize()
        if isinstance(self._part, _FieldPart):
            self.fields[self._part.name] = self._part.value.decode("utf-8", "replace")

    def write(self, chunk: bytes) -> None:
        try:
            self.parser.write(chunk)
        except FormParserError as exc:
            raise BadMultipart(f"malformed multipart body: {exc}") from exc

    def finish(self, size: int) -> Upload:
        try:
            self.parser.finalize()
        except FormParserError as exc:
            raise BadMultipart(f"malformed multipart body: {exc}") from exc
        self.close()
        part = self.file
        if part is None or not part.done:
            raise MissingFile("multipart body has no `file` part")
        if part.size == 0:
            raise UnreadableMediaError("the uploaded file is empty (0 bytes)")
        return Upload(part.path, os.path.basename(part.filename) or "upload", part.size, self.fields)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


def _boundary(content_type: str) -> bytes:
    for piece in content_type.split(";")[1:]:
        key, _, value = piece.strip().partition("=")
        if key.lower() == "boundary" and value:
            return value.strip('"').encode("latin-1")
    raise BadMultipart("multipart/form-data without a boundary")


async def receive_upload(request: Request, folder: Path, *, max_bytes: int, deadline: float,
                         filename: str = "upload", raw_types: tuple[str, ...] = RAW_TYPES) -> Upload:
    """Stream the request body into `folder` (see the module docstring for every refusal); `raw_types`:
    the content types taken as a raw body (an admin route that reads JSON passes its own)."""
    ctype = request.headers.get("content-type", "")
    mime = ctype.split(";")[0].strip().lower()
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise UploadTooLarge(f"upload of {int(declared):,} bytes exceeds max_upload_mb ({max_bytes / 2**20:g} MiB)")
    sink: _RawSink | _MultipartSink
    if mime == "multipart/form-data":
        sink = _MultipartSink(folder, ctype)
    elif mime.startswith(raw_types):
        sink = _RawSink(folder, filename)
    else:
        raise UnsupportedMediaType(f"content type {mime or 'none'!r} is not accepted: send an image/*, video/* or "
                                   "application/octet-stream body, or multipart/form-data with a `file` part")
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
                raise UploadTooLarge(f"upload exceeds max_upload_mb ({max_bytes / 2**20:g} MiB)")
            sink.write(chunk)
        if size == 0:
            raise UnreadableMediaError("empty request body (0 bytes)")
        return sink.finish(size)
    except TimeoutError as exc:
        raise RequestTimeout("the upload did not arrive within request_timeout") from exc
    except _Disconnected as exc:
        raise ClientDisconnect("the client closed the connection before the upload ended") from exc
    finally:
        sink.close()

"""A small Python client for `mamori serve` (httpx), for moderation code.

    from detector.client import MamoriClient
    with MamoriClient("http://127.0.0.1:8000", token="...") as mc:
        result = mc.score("upload.mp4")            # dict in the result schema
        if result["verdict"] == "flag": ...

Uploads stream from disk (the file is never read whole into memory). Every non-2xx reply raises
`ServiceError` with the HTTP status, the error name, the message and, for a refused limit, its
name; a 503 carries `retry_after` (seconds) when the server sent one. Character names and
reference paths travel percent-encoded in the URL path (`_segment`), so `/`, `?`, `#`, `%`,
spaces and non-ASCII reach the server as given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, BinaryIO, Self
from urllib.parse import quote

import httpx

from detector.errors import DetectorError

__all__ = ["MamoriClient", "ServiceError"]


def _segment(value: str) -> str:
    """`value` as one URL path segment: every reserved character percent-encoded, dots too when
    the whole value is `.` or `..` (which a URL would otherwise resolve away)."""
    if not value:
        raise ValueError("an empty name cannot be sent in a URL path")
    seg = quote(value, safe="")
    return seg.replace(".", "%2E") if seg in (".", "..") else seg


class ServiceError(DetectorError):
    """A refused or failed request: `status`, `error`, `limit` (or None), `retry_after` (or None)."""

    def __init__(self, status: int, error: str, message: str, *, limit: str | None = None,
                 retry_after: float | None = None):
        super().__init__(f"{status} {error}: {message}")
        self.status, self.error, self.limit, self.retry_after = status, error, limit, retry_after


class MamoriClient:
    def __init__(self, base_url: str = "http://127.0.0.1:8000", *, token: str | None = None, timeout: float = 600.0):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=base_url, headers=headers, timeout=timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _check(self, resp: httpx.Response) -> Any:
        if resp.is_success:
            return resp.json()
        try:
            body = resp.json()
        except ValueError:
            body = {"error": "HTTPError", "message": resp.text[:500]}
        retry = resp.headers.get("retry-after")
        raise ServiceError(resp.status_code, str(body.get("error")), str(body.get("message")), limit=body.get("limit"),
                           retry_after=float(retry) if retry and retry.isdigit() else None)

    def health(self) -> dict[str, Any]:
        return self._check(self._http.get("/v1/health"))  # type: ignore[no-any-return]

    def ready(self) -> bool:
        return self._http.get("/v1/ready").status_code == 200

    def index(self) -> dict[str, Any]:
        return self._check(self._http.get("/v1/index"))  # type: ignore[no-any-return]

    def score(self, media: str | Path | bytes | BinaryIO, *, filename: str | None = None, fps: float | None = None,
              max_frames: int | None = None) -> dict[str, Any]:
        """Score an image or video: a path, bytes, or an open binary file. Returns the result dict."""
        params = {k: v for k, v in {"fps": fps, "max_frames": max_frames}.items() if v is not None}
        if isinstance(media, (str, Path)):
            with open(media, "rb") as fh:
                return self.score(fh, filename=filename or Path(media).name, fps=fps, max_frames=max_frames)
        resp = self._http.post("/v1/score", params=params, files={"file": (filename or "upload", media)})
        return self._check(resp)  # type: ignore[no-any-return]

    def add_reference(self, image: str | Path, character: str, *, franchise: str = "", rights_holder: str = "",
                      license: str = "") -> dict[str, Any]:
        data = {"character": character, "franchise": franchise, "rights_holder": rights_holder, "license": license}
        with open(image, "rb") as fh:
            return self._check(self._http.post("/v1/admin/references", data=data,  # type: ignore[no-any-return]
                                               files={"file": (Path(image).name, fh)}))

    def remove_reference(self, reference: str) -> dict[str, Any]:
        return self._check(self._http.delete(f"/v1/admin/references/{_segment(reference)}"))  # type: ignore[no-any-return]

    def remove_character(self, character: str) -> dict[str, Any]:
        return self._check(self._http.delete(f"/v1/admin/characters/{_segment(character)}"))  # type: ignore[no-any-return]

    def reload(self) -> dict[str, Any]:
        return self._check(self._http.post("/v1/admin/reload"))  # type: ignore[no-any-return]

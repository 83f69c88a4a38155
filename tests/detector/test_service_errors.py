"""The service's one exception-to-HTTP table (`detector.service.errors.ERROR_TABLE`), row by row.

Each exception is raised from a route of the real app (`create_app`, in process, no model loaded),
so the reply goes through the same handlers and middleware as in `mamori serve`. The expected
replies are written out here (the README's HTTP API contract), not read back from the table.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from detector.errors import BackboneUnavailableError, ConfigError, DetectorError, MediaLimitError, UnreadableMediaError
from detector.media.files import FileChangedError
from detector.service import ServiceConfig, create_app
from detector.service import errors as E
from index import CorruptIndexError, IncompatibleIndexError, IndexLockedError, IndexStoreError, ReferenceNotFoundError
from index.errors import ImageTooLargeError

#: exception class -> (status, limit, headers the reply must carry)
EXPECTED: dict[type[Exception], tuple[int, str | None, dict[str, str]]] = {
    E.Unauthorized: (401, None, {"www-authenticate": "Bearer"}),
    E.Forbidden: (403, None, {}),
    E.PathRefused: (403, None, {}),
    E.UnsupportedMediaType: (415, None, {}),
    E.NotReady: (503, None, {"retry-after": "5"}),
    E.Busy: (503, None, {"retry-after": "2"}),
    E.BadMultipart: (400, None, {}),
    E.ClientDisconnect: (400, None, {}),
    E.MissingFile: (422, None, {}),
    E.MissingField: (422, None, {}),
    E.ReferenceNotAdded: (422, None, {}),
    E.InvalidParameter: (422, None, {}),
    E.UploadTooLarge: (413, "max_upload_mb", {}),
    E.FormFieldTooLarge: (413, "max_field_bytes", {}),
    E.TooManyFormFields: (413, "max_form_fields", {}),
    E.RequestTimeout: (408, "request_timeout", {}),
    E.LimitExceeded: (422, "max_frames", {}),
    MediaLimitError: (413, "max_pixels", {}),  # its default limit; the others below
    UnreadableMediaError: (422, None, {}),
    ConfigError: (422, None, {}),
    DetectorError: (400, None, {}),
    ReferenceNotFoundError: (404, None, {}),
    IndexLockedError: (409, None, {}),
    IndexStoreError: (400, None, {}),
}


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> FastAPI:
    """The real app with a route that raises what the test puts in `app.state.to_raise`."""
    app = create_app(ServiceConfig(index=tmp_path_factory.mktemp("service") / "no-index"))

    async def boom() -> None:
        raise app.state.to_raise

    app.add_api_route("/boom", boom)
    return app


@pytest.fixture(scope="module")
def client(app: FastAPI) -> Iterator[TestClient]:
    yield TestClient(app)  # no `with`: the lifespan (model loading) does not run


def _raised(app: FastAPI, client: TestClient, exc: Exception) -> tuple[int, dict[str, object], dict[str, str]]:
    app.state.to_raise = exc
    r = client.get("/boom")
    return r.status_code, r.json(), dict(r.headers)


def test_the_table_is_the_contract() -> None:
    assert {rule.exc for rule in E.ERROR_TABLE} == set(EXPECTED)
    assert set(E.ApiError.__subclasses__()) <= set(EXPECTED)  # every refusal of the service has its row


@pytest.mark.parametrize("rule", E.ERROR_TABLE, ids=lambda rule: rule.exc.__name__)
def test_every_row(app: FastAPI, client: TestClient, rule: E.ErrorRule) -> None:
    status, limit, headers = EXPECTED[rule.exc]
    name = rule.exc.__name__
    got_status, body, got_headers = _raised(app, client, rule.exc(f"{name} says why"))
    assert got_status == status
    assert body == {"error": name, "message": f"{name} says why", **({"limit": limit} if limit else {})}
    assert got_headers["x-mamori-error"] == name  # the metrics count refusals by it
    assert got_headers.items() >= headers.items()


@pytest.mark.parametrize(("limit", "status"), [("max_pixels", 413), ("max_duration", 413),
                                               ("max_frames_total", 413), ("request_timeout", 408)])
def test_media_limit_status_follows_its_limit(app: FastAPI, client: TestClient, limit: str, status: int) -> None:
    got_status, body, _ = _raised(app, client, MediaLimitError("over", limit=limit))
    assert (got_status, body) == (status, {"error": "MediaLimitError", "message": "over", "limit": limit})


@pytest.mark.parametrize(("exc", "status"), [(FileChangedError("x"), 422), (BackboneUnavailableError("x"), 400),
                                             (ImageTooLargeError("x"), 400), (IncompatibleIndexError("x"), 400),
                                             (CorruptIndexError("x"), 400)])
def test_subclasses_take_their_nearest_row(app: FastAPI, client: TestClient, exc: Exception, status: int) -> None:
    got_status, body, headers = _raised(app, client, exc)
    assert (got_status, body["error"], headers["x-mamori-error"]) == (status, type(exc).__name__, type(exc).__name__)


def test_unmapped_exception_is_a_logged_generic_500(app: FastAPI, client: TestClient,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="mamori.service"):
        status, body, headers = _raised(app, client, RuntimeError("secret detail /srv/index"))
    assert (status, body) == (500, {"error": "RuntimeError", "message": "internal error"})
    assert "x-mamori-error" not in headers
    logged = [r for r in caplog.records if r.name == "mamori.service" and r.exc_info]
    assert logged and isinstance(logged[0].exc_info[1], RuntimeError)  # type: ignore[index]
    assert 'mamori_errors_total{error="500"}' in client.get("/metrics").text


def test_real_validation_and_auth_use_the_table(tmp_path: Path) -> None:
    app = create_app(ServiceConfig(index=tmp_path / "no-index", tokens={"tok": frozenset({"score"})}))
    client = TestClient(app)
    bad = client.post("/v1/score?fps=-1", headers={"Authorization": "Bearer tok"})
    assert bad.status_code == 422 and bad.json()["error"] == "InvalidParameter"
    assert client.post("/v1/score").json()["error"] == "Unauthorized"
    assert client.post("/v1/admin/reload", headers={"Authorization": "Bearer tok"}).status_code == 403
    over = client.post("/v1/score?max_frames=100000", headers={"Authorization": "Bearer tok"})
    assert (over.status_code, over.json()["limit"]) == (422, "max_frames")
    loading = client.post("/v1/score", headers={"Authorization": "Bearer tok"})
    assert (loading.status_code, loading.json()["error"], loading.headers["retry-after"]) == (503, "NotReady", "5")

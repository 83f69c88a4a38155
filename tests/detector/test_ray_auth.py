"""When a Ray connection has no token authentication (`detector.runs.ray_auth`), decided from Ray's
version, whether mamori started the cluster, and the driver's auth mode (read from Ray 2.60's source
and checked on it: a private `ray.init()` has token auth, `RAY_AUTH_MODE=disabled` or a cluster
from `ray start` reached with `--ray-address` has none)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from detector.runs import ray_auth


@pytest.mark.parametrize(("version", "address", "token_auth", "expected"), [
    ("2.60.0", None, True, None),  # the private cluster `--engine ray` starts: token auth on by default
    ("2.52.0", "head:6379", True, None),  # a cluster reached with RAY_AUTH_MODE=token and its token
    ("2.60.0", "head:6379", False, "connected to the Ray cluster at head:6379 without token authentication"),
    ("2.60.0", "ray://head:10001", False, "connected to the Ray cluster at ray://head:10001 without token"),
    ("2.60.0", None, False, "the private Ray cluster on this machine runs without token authentication"),
    ("2.51.1", None, True, "Ray 2.51.1 has no token authentication (it came in Ray 2.52)"),
    ("2.9.3", "head:6379", False, "Ray 2.9.3 has no token authentication (it came in Ray 2.52): anyone who reaches"),
])
def test_when_a_ray_connection_is_unauthenticated(version: str, address: str | None, token_auth: bool,
                                                  expected: str | None) -> None:
    got = ray_auth.ray_auth_warning(version, address=address, token_auth=token_auth)
    assert got == expected if expected is None else (got is not None and got.startswith(expected)), got


def test_the_warning_goes_to_stderr(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(ray_auth, "_token_auth_on", lambda: False)
    ray_auth.warn_without_token_auth(SimpleNamespace(__version__="2.60.0"), "head:6379")
    out = capsys.readouterr()
    assert out.out == "" and out.err.startswith("warning: connected to the Ray cluster at head:6379 without token")
    monkeypatch.setattr(ray_auth, "_token_auth_on", lambda: True)
    ray_auth.warn_without_token_auth(SimpleNamespace(__version__="2.60.0"), "head:6379")
    assert capsys.readouterr().err == ""


def test_the_installed_ray_reports_its_auth_mode() -> None:
    """`_token_auth_on` reads the real Ray's mode (before any init: off unless RAY_AUTH_MODE=token)."""
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'mamori[ray]')")
    import os

    assert ray_auth._token_auth_on() is (os.environ.get("RAY_AUTH_MODE", "").lower() == "token")

"""The playground's routes without an engine: on by default, open without a key, off with
``--no-playground``. The app is vLLM's, built from the command line with the s1 plugin
(no lifespan runs, so no model loads)."""

from __future__ import annotations

from fastapi.testclient import TestClient

from server.api.cli import load_settings
from tests.helpers import s1_app


def test_on_by_default_and_open_without_a_key(monkeypatch):
    client = TestClient(s1_app(["--api-key", "k"], monkeypatch))
    for path in ("/", "/playground", "/playground/"):
        r = client.get(path)
        assert r.status_code == 200 and "s1-serve playground" in r.text
    assert client.get("/playground/static/app.js").status_code == 200
    assert client.get("/playground/config.json").json()["auth"] is True
    assert client.get("/v1/models").status_code == 401  # the API still needs the key
    assert client.get("/playground/../v1/models").status_code == 401


def test_no_playground_turns_it_off(monkeypatch):
    assert load_settings(["--no-playground"]).playground is False
    for argv in (["--api-key", "k", "--no-playground"], ["--no-playground"]):
        client = TestClient(s1_app(argv, monkeypatch))
        assert client.get("/").status_code == 404  # vLLM's key check guards /v1/... only
        assert client.get("/playground/static/app.js").status_code == 404

"""The playground's routes without an engine: on by default, open without a key, off with
``--no-playground`` (the app is built, its lifespan is not run, so no model loads)."""

from __future__ import annotations

from fastapi.testclient import TestClient

from server.api.app import create_app
from server.api.cli import load_settings
from server.settings import Settings


def test_on_by_default_and_open_without_a_key():
    client = TestClient(create_app(Settings(api_keys=["k"])))
    for path in ("/", "/playground", "/playground/"):
        r = client.get(path)
        assert r.status_code == 200 and "s1-serve playground" in r.text
    assert client.get("/playground/static/app.js").status_code == 200
    assert client.get("/playground/config.json").json()["auth"] is True
    assert client.get("/v1/models").status_code == 401  # the API still needs the key
    assert client.get("/playground/../v1/models").status_code == 401


def test_no_playground_turns_it_off():
    assert load_settings(["--no-playground"]).playground is False
    client = TestClient(create_app(Settings(api_keys=["k"], playground=False)))
    assert client.get("/").status_code == 401  # not open any more
    client = TestClient(create_app(Settings(playground=False)))
    assert client.get("/").status_code == 404
    assert client.get("/playground/static/app.js").status_code == 404

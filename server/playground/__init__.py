"""The playground: a single page, served by the server itself, to watch budget forcing.

Why here: seeing where a ``Wait`` was forced or where thinking was cut is the quickest
way to understand (and debug) a budget. The page is plain HTML/CSS/JS under
``server/playground/`` (no build step, nothing fetched from elsewhere) and uses only the
public API: streamed ``/v1/chat/completions`` and each choice's ``budget`` object.

Routes (on unless ``--no-playground``): ``GET /`` and ``GET /playground`` (the page),
``GET /playground/static/...`` (its files) and ``GET /playground/config.json`` (what the
page needs to know: whether keys are required, the model, the default continuation).
The page and its files hold no data, so they are served without an API key; every
request the page makes to the API sends the key the user types.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from server.settings import Settings

STATIC = Path(__file__).resolve().parent  # the page and its files sit beside this module
PREFIX = "/playground"


def is_playground_path(path: str) -> bool:
    """The page's own paths (open without an API key)."""
    return path in ("/", PREFIX, PREFIX + "/") or path.startswith(PREFIX + "/")


def mount(app: FastAPI, settings: Settings) -> None:
    """Add the page, its files and its config endpoint to ``app``."""
    auth = bool(settings.all_api_keys())

    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    for path in ("/", PREFIX, PREFIX + "/"):
        app.add_api_route(path, page, methods=["GET"], include_in_schema=False)

    @app.get(PREFIX + "/config.json", include_in_schema=False)
    async def config(request: Request) -> JSONResponse:
        serving = getattr(request.app.state, "serving", None)
        model = serving.model if serving is not None else None
        ft = model.format_tokens if model is not None else None
        return JSONResponse({
            "auth": auth,
            "model": model.name if model else None,
            "max_model_len": model.max_model_len if model else None,
            "thinking_format": ft.fmt.name if ft else None,
            "thinking_continuation": settings.thinking_continuation,
        })

    app.mount(PREFIX + "/static", StaticFiles(directory=STATIC), name="playground")

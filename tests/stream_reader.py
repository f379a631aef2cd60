"""The SSE readers of the server tests (httpx-sse; no test parses ``data:`` lines itself):
the events of one response, and a reader for tests that watch streams from threads
(shutdown, deadlines, engine death): what a stream carried, and events to synchronise on."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field

import httpx
from httpx_sse import EventSource, connect_sse

DONE = {"done": True}  # what :func:`sse_events` lists for ``data: [DONE]``


def sse_events(resp: httpx.Response) -> list[dict]:
    """The JSON data of every event of a streamed response, ``[DONE]`` as :data:`DONE`."""
    return [DONE if sse.data == "[DONE]" else json.loads(sse.data)
            for sse in EventSource(resp).iter_sse()]


def sse_typed(resp: httpx.Response) -> list[tuple[str, object]]:
    """(event name, JSON data) of every event; ``[DONE]`` as None (Responses and Anthropic
    Messages name their events; chat and completions events are all ``message``)."""
    return [(sse.event, None if sse.data == "[DONE]" else json.loads(sse.data))
            for sse in EventSource(resp).iter_sse()]


def stream_post(base_url: str, path: str, body: dict, headers: dict | None = None,
                timeout: float = 120) -> list[dict]:
    """POST ``body`` with ``stream`` set; the events (:func:`sse_events`) of a 200."""
    with httpx.stream("POST", base_url + path, json={**body, "stream": True},
                      headers=headers, timeout=timeout) as resp:
        assert resp.status_code == 200, resp.read()
        return sse_events(resp)


@dataclass
class StreamRecord:
    """What one SSE reader saw. ``started`` is set at the first event; a reader with
    ``pause_after`` stops after that many events (``paused`` is set) and reads on once
    ``go`` is set. ``started``, ``paused`` and ``ended`` are also set when the stream
    fails, so no test waits on a stream that is gone."""

    status: int | None = None
    events: list[dict] = field(default_factory=list)
    done: bool = False  # [DONE] arrived
    transport_error: str | None = None
    pause_after: int | None = None
    started: threading.Event = field(default_factory=threading.Event)
    paused: threading.Event = field(default_factory=threading.Event)
    go: threading.Event = field(default_factory=threading.Event)
    ended: threading.Event = field(default_factory=threading.Event)

    @property
    def error(self) -> object:
        """The error event's ``error``, else the transport error, else None."""
        if self.events and "error" in self.events[-1]:
            return self.events[-1]["error"]
        return self.transport_error

    def finished_choices(self) -> list[dict]:
        return [c for e in self.events for c in e.get("choices", []) if c.get("finish_reason")]


def read_stream(client: httpx.Client, body: dict, rec: StreamRecord,
                path: str = "/v1/chat/completions") -> None:
    """POST ``body`` (it must ask to stream) and read the SSE stream to its end."""
    try:
        with connect_sse(client, "POST", path, json=body) as source:
            rec.status = source.response.status_code
            if rec.status != 200:
                return
            for sse in source.iter_sse():
                if sse.data == "[DONE]":
                    rec.done = True
                    continue
                rec.events.append(json.loads(sse.data))
                rec.started.set()
                if len(rec.events) == rec.pause_after:
                    rec.paused.set()
                    rec.go.wait()
    except httpx.HTTPError as exc:
        rec.transport_error = repr(exc)
    finally:
        rec.started.set()
        rec.paused.set()
        rec.ended.set()


def read_in_thread(base_url: str, body: dict, rec: StreamRecord,
                   timeout: float = 600) -> threading.Thread:
    """:func:`read_stream` in a started thread, with its own client."""
    def run() -> None:
        with httpx.Client(base_url=base_url, timeout=timeout) as client:
            read_stream(client, body, rec)

    thread = threading.Thread(target=run)
    thread.start()
    return thread

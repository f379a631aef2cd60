"""One SSE reader for the server tests that watch streams from threads (shutdown,
deadlines, engine death): what a stream carried, and events to synchronise on."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field

import httpx
from httpx_sse import connect_sse


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

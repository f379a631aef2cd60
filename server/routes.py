"""Thin HTTP handlers: parse, hand to :mod:`server.serving`, choose JSON or SSE.

The path of one request: ``routes`` (HTTP) -> ``protocol`` (request model) ->
``serving.prepare`` (budget, context, SamplingParams) -> vLLM ``AsyncLLM`` ->
``logits_processor`` -> ``budget`` (in the engine) -> ``serving.run_choices`` ->
``reasoning`` (split by replaying ``budget``) -> response model. A chat or completions
request that uses a field only vLLM's serving classes honour (logprobs, tools, ...)
goes to :mod:`server.delegated` instead; Responses, Messages and tokenization are
vLLM's routers (mounted in :mod:`server.app`).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from server import metrics, sse
from server.delegated import delegate
from server.engine_info import VersionInfo, version_info
from server.errors import CLIENT_CLOSED_REQUEST, ERROR_RESPONSES, STREAMING_RESPONSES, APIError
from server.protocol import (
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionChoice,
    CompletionRequest,
    CompletionResponse,
    DeltaMessage,
    Health,
    ModelCard,
    ModelList,
    ResponseMessage,
)
from server.serving import (
    ChoiceEvent,
    ChoiceResult,
    Prepared,
    RunState,
    Serving,
    Ticket,
    record_choice_metrics,
    watch_disconnect,
)
from server.vllm_layer import needs_vllm

T = TypeVar("T")

router = APIRouter()


def get_serving(request: Request) -> Serving:
    state = request.app.state
    serving = getattr(state, "serving", None)
    if serving is None:
        raise APIError(503, "the model is still loading; retry shortly "
                       "(GET /health says when it is ready)",
                       headers={"Retry-After": "5"})
    if state.engine_dead():
        raise APIError(503, "the inference engine has stopped; restart the server")
    return serving


ServingDep = Annotated[Serving, Depends(get_serving)]


async def _events(serving: Serving, prepared: Prepared, rid: str,
                  state: RunState) -> AsyncIterator[ChoiceEvent]:
    """Engine events with vLLM's exceptions mapped to API errors."""
    from vllm.exceptions import VLLMClientError
    from vllm.v1.engine.exceptions import EngineDeadError

    try:
        async for event in serving.run_choices(prepared, rid, state):
            yield event
    except VLLMClientError as exc:
        raise APIError(400, str(exc), getattr(exc, "parameter", None)) from None
    except EngineDeadError:
        raise APIError(503, "the inference engine has stopped; restart the server") from None
    except TimeoutError:
        await serving.abort(rid)
        limit = serving.settings.request_timeout_s
        raise APIError(504, f"the request ran past its {limit:g} s deadline and was aborted; "
                       "ask for fewer tokens or raise the server's --request-timeout-s") from None
    # (Any other exception is a bug of ours or vLLM's: a 500, not a client error.)


async def until_client_leaves(request: Request, work: Awaitable[T],
                              on_leave: Callable[[], Awaitable[None]] | None = None) -> T:
    """Await ``work`` (a non-streamed request's whole answer), cancelled if the client
    goes away: then ``on_leave`` runs and the request ends as a 499, logged and counted,
    not an exception (a 500) in the ASGI server. Cancelling the work closes the engine
    streams it awaits, which aborts their engine requests."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.create_task(watch_disconnect(request.receive, task))
    try:
        return await task
    except asyncio.CancelledError:
        if on_leave is not None:
            await on_leave()
        me = asyncio.current_task()
        if task.cancelled() and not (me is not None and me.cancelling()):
            raise APIError(CLIENT_CLOSED_REQUEST, "the client closed the request") from None
        raise  # this handler itself was cancelled (shutdown): let it go
    finally:
        watcher.cancel()


async def _collect(serving: Serving, prepared: Prepared, rid: str,
                   request: Request) -> RunState:
    """Run a non-streaming request to the end; abort it if the client leaves."""
    state = RunState()

    async def consume() -> None:
        async for _ in _events(serving, prepared, rid, state):
            pass

    await until_client_leaves(request, consume(), lambda: serving.abort(rid))
    return state


async def _delegate(request: Request, kind: str, stream: bool) -> Response:
    """:func:`server.delegated.delegate`; a non-streamed answer is watched for the client
    leaving, as ours are (vLLM's own routes do it with their ``with_cancellation``)."""
    if stream:  # the streamed response's end is the disconnect check
        return await delegate(request, kind)
    return await until_client_leaves(request, delegate(request, kind))


def _stream(gen: AsyncIterator[str], first: str | None) -> StreamingResponse:
    async def body() -> AsyncIterator[str]:
        try:
            if first is not None:
                yield first
            async for item in gen:
                yield item
        finally:  # on disconnect too: runs the generator's cleanup (abort, release) now
            await gen.aclose()

    return StreamingResponse(body(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache"})


async def _prime(gen: AsyncIterator[str]) -> str | None:
    """Pull the first SSE item so that errors before any output become HTTP errors."""
    try:
        return await gen.__anext__()
    except StopAsyncIteration:
        return None


async def _stream_lines(serving: Serving, prepared: Prepared, rid: str, ticket: Ticket,
                        include_usage: bool, chunk: Callable[[list, Any], Any],
                        delta: Callable[[ChoiceEvent], Any],
                        started: float) -> AsyncIterator[str]:
    state = RunState()
    finished = False
    try:
        async for event in _events(serving, prepared, rid, state):
            yield sse.event(chunk([delta(event)], None))
        if include_usage:
            yield sse.event(chunk([], state.usage()))
        yield "data: [DONE]\n\n"
        finished = True
    except APIError as exc:
        if state.first_token_at is None:
            await serving.abort(rid)
            raise  # nothing sent yet: becomes a normal HTTP error via _prime
        yield sse.event(exc.body(rid))
        yield "data: [DONE]\n\n"
        # (finished stays False: the engine stops working on it below, after the client
        # has its error event; an abort may not return when the engine is gone.)
    finally:
        ticket.release()
        if not finished:  # an error, the client went away or the server is stopping
            await serving.abort(rid)
        _observe(state, started)


def _observe(state: RunState, started: float) -> None:
    if state.first_token_at is not None:
        metrics.TTFT.observe(state.first_token_at - started)
    metrics.LATENCY.observe(time.perf_counter() - started)
    record_choice_metrics(state)


def _rid(request: Request) -> str:
    """The engine request id: the HTTP request id plus a suffix, so that two clients
    sending the same x-request-id never collide inside the engine."""
    base = getattr(request.state, "request_id", None) or "req"
    return f"{base}-{uuid.uuid4().hex[:8]}"


async def _start_stream(gen: AsyncIterator[str], ticket: Ticket) -> StreamingResponse:
    try:
        first = await _prime(gen)
    except BaseException:
        ticket.release()
        raise
    return _stream(gen, first)


async def _stream_response(serving: Serving, prepared: Prepared, rid: str, body: Any,
                           chunk: Callable[[list, Any], Any], delta: Callable[[ChoiceEvent], Any],
                           started: float) -> StreamingResponse:
    include = bool(body.stream_options and body.stream_options.include_usage)
    ticket = serving.admit(body.n)
    gen = _stream_lines(serving, prepared, rid, ticket, include, chunk, delta, started)
    return await _start_stream(gen, ticket)


async def _run_to_end(serving: Serving, prepared: Prepared, rid: str, request: Request, n: int,
                      started: float) -> RunState:
    with serving.admit(n):
        state = await _collect(serving, prepared, rid, request)
    _observe(state, started)
    return state


def _fingerprint(request: Request) -> str | None:
    """vLLM's system_fingerprint for this engine (its serving classes compute it)."""
    return getattr(getattr(request.app.state, "openai_serving_chat", None),
                   "system_fingerprint", None)


def _stamp(fingerprint: str | None, body: Any, choices: list, usage: Any) -> str | None:
    """As vLLM: on the usage chunk when usage is streamed, else on terminal chunks."""
    if body.stream_options and body.stream_options.include_usage:
        return fingerprint if usage is not None else None
    return fingerprint if any(c.finish_reason for c in choices) else None


def _finished_choices(state: RunState) -> list[tuple[int, ChoiceResult, str | None]]:
    """Choices in index order with their reasoning (None without a thinking format)."""
    return [(i, c, c.splitter.reasoning_text if c.splitter.state is not None else None)
            for i, c in sorted(state.choices.items())]


# ---------------------------------------------------------------------- chat
@router.post("/v1/chat/completions", response_model=ChatCompletionResponse,
             responses=STREAMING_RESPONSES)
async def chat_completions(body: ChatCompletionRequest, request: Request,
                           serving: ServingDep) -> Response:
    if needs_vllm("chat", body):  # logprobs, tools, response_format, ...: vLLM's serving class
        return await _delegate(request, "chat", bool(body.stream))
    started = time.perf_counter()
    prompt = serving.chat_prompt(body)
    ids = serving.model.tokenizer.encode(prompt, add_special_tokens=False)
    prepared = serving.prepare(body, prompt, ids, "messages")
    rid = _rid(request)
    cid, created, name = "chatcmpl-" + rid, int(time.time()), serving.model.name
    fingerprint = _fingerprint(request)

    if body.stream:
        def chunk(choices: list, usage: Any) -> ChatCompletionChunk:
            return ChatCompletionChunk(id=cid, created=created, model=name, choices=choices,
                                       usage=usage,
                                       system_fingerprint=_stamp(fingerprint, body, choices,
                                                                 usage))

        roles_sent: set[int] = set()

        def delta(ev: ChoiceEvent) -> ChatChunkChoice:
            first = ev.index not in roles_sent
            roles_sent.add(ev.index)
            return ChatChunkChoice(index=ev.index, finish_reason=ev.finish_reason,
                                   delta=DeltaMessage(
                                       role="assistant" if first else None,
                                       # vLLM opens each choice with content ""
                                       content=ev.content or ("" if first else None),
                                       reasoning=ev.reasoning or None,
                                       reasoning_content=ev.reasoning or None),
                                   budget=ev.budget)

        return await _stream_response(serving, prepared, rid, body, chunk, delta, started)

    state = await _run_to_end(serving, prepared, rid, request, body.n, started)
    choices = []
    for index, c, reasoning in _finished_choices(state):
        choices.append(ChatChoice(index=index, finish_reason=c.finish_reason,
                                  message=ResponseMessage(content=c.splitter.content_text
                                                          or None,
                                                          reasoning=reasoning,
                                                          reasoning_content=reasoning),
                                  budget=c.budget))
    resp = ChatCompletionResponse(id=cid, created=created, model=name, choices=choices,
                                  usage=state.usage(), system_fingerprint=fingerprint)
    return JSONResponse(resp.model_dump())


# --------------------------------------------------------------- completions
@router.post("/v1/completions", response_model=CompletionResponse,
             responses=STREAMING_RESPONSES)
async def completions(body: CompletionRequest, request: Request,
                      serving: ServingDep) -> Response:
    if needs_vllm("completions", body):
        return await _delegate(request, "completions", bool(body.stream))
    started = time.perf_counter()
    prompt_text, ids = serving.completion_prompt(body)
    prepared = serving.prepare(body, prompt_text, ids, "prompt")
    rid = _rid(request)
    cid, created, name = "cmpl-" + rid, int(time.time()), serving.model.name
    echo = (prompt_text or "") if body.echo else ""
    fingerprint = _fingerprint(request)

    if body.stream:
        def chunk(choices: list, usage: Any) -> CompletionResponse:
            return CompletionResponse(id=cid, created=created, model=name, choices=choices,
                                      usage=usage,
                                      system_fingerprint=_stamp(fingerprint, body, choices,
                                                                usage))

        echoed: set[int] = set()

        def delta(ev: ChoiceEvent) -> CompletionChoice:
            text = ev.content
            if echo and ev.index not in echoed:
                echoed.add(ev.index)
                text = echo + text
            return CompletionChoice(index=ev.index, text=text, finish_reason=ev.finish_reason,
                                    reasoning=ev.reasoning or None,
                                    reasoning_content=ev.reasoning or None, budget=ev.budget)

        return await _stream_response(serving, prepared, rid, body, chunk, delta, started)

    state = await _run_to_end(serving, prepared, rid, request, body.n, started)
    choices = []
    for index, c, reasoning in _finished_choices(state):
        choices.append(CompletionChoice(index=index, text=echo + c.splitter.content_text,
                                        finish_reason=c.finish_reason, reasoning=reasoning,
                                        reasoning_content=reasoning,
                                        budget=c.budget))
    resp = CompletionResponse(id=cid, created=created, model=name, choices=choices,
                              usage=state.usage(), system_fingerprint=fingerprint)
    return JSONResponse(resp.model_dump())


# -------------------------------------------------------------------- others
@router.get("/v1/models", response_model=ModelList, responses=ERROR_RESPONSES)
async def list_models(serving: ServingDep) -> ModelList:
    m = serving.model
    from vllm.entrypoints.serve.engine.protocol import ModelPermission

    return ModelList(data=[ModelCard(id=m.name, root=serving.settings.model,
                                     permission=[ModelPermission().model_dump()],
                                     max_model_len=m.max_model_len,
                                     thinking_format=m.format_tokens.fmt.name
                                     if m.format_tokens else None,
                                     reasoning_effort_budgets=serving.settings.
                                     reasoning_effort_budgets if m.format_tokens else None)])


@router.get("/health", response_model=Health, responses={503: {"model": Health}})
async def health(request: Request) -> JSONResponse:
    state = request.app.state
    if state.engine_dead():
        return JSONResponse(Health(status="dead", detail=state.load_error).model_dump(),
                            status_code=503)
    if getattr(state, "serving", None) is None:
        return JSONResponse(Health(status="loading").model_dump(), status_code=503)
    return JSONResponse(Health(status="ok").model_dump())


@router.get("/version", response_model=VersionInfo)
async def version(request: Request) -> VersionInfo:
    """vLLM's ``{"version"}``, our version and the resolved engine configuration."""
    return version_info(getattr(request.app.state, "engine_info", None))


@router.get("/metrics", response_class=Response)
async def prometheus_metrics() -> Response:
    return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

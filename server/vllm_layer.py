"""vLLM's own OpenAI/Anthropic serving layer on our in-process engine, with budgets.

What s1-serve does not implement itself it takes from vLLM 0.32: the chat and
completion serving classes (logprobs, structured outputs, tools, echo, ...), the
Responses and Anthropic Messages serving classes and routers, and tokenization.
They run on the same ``AsyncLLM`` as our native path. Only what s1-serve adds is
here:

* a budget request (:class:`BudgetRequest`), read from the body by
  :func:`budget_dependency` (``thinking_min``/``thinking_max`` and aliases,
  ``reasoning_effort``/``reasoning.effort``, Anthropic ``thinking.budget_tokens``)
  and carried to the engine call in a context variable;
* a hook on ``engine.generate`` (:func:`install_hook`) that turns it into the
  processor's ``SamplingParams.extra_args`` with a decision seed, applies the
  answer reserve to ``max_tokens`` and holds an admission ticket while it runs.
  The prompt's token ids are known there, so whether the prompt opens the
  thinking block is exact. Constrained answers (structured outputs, named or
  required tool calls) get no forced answer prefix, so the grammar is not broken;
* a chat template that opens the thinking block for formats whose template does
  not (as the native path does), and vLLM's reasoning parser ``s1``
  (:mod:`server.s1_parser`) so that reasoning is split and counted exactly.
"""

from __future__ import annotations

import contextvars
import dataclasses
import logging
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError

from server import fanout
from server.errors import APIError, bad_request
from server.formats import render_generation_prompt
from server.protocol import BudgetFields
from server.serving import Serving, Ticket
from server.settings import Settings

logger = logging.getLogger(__name__)

# reasoning effort -> thinking_max; clipped to half the room left in the context.
EFFORT_BUDGETS = {"none": 0, "minimal": 0, "low": 256, "medium": 1024, "high": 4096,
                  "xhigh": 8192, "max": 16384}
BUDGET_KEYS = set(BudgetFields.model_fields)


@dataclasses.dataclass
class BudgetRequest:
    thinking_min: int | None
    thinking_max: int | None
    thinking_continuation: str | None
    max_tokens: int | None  # what the client asked for (None: the server chooses)
    soft_max: bool = False  # from an effort level: clipped to the context, never a 400
    n: int = 1


BUDGET: contextvars.ContextVar[BudgetRequest | None] = contextvars.ContextVar("s1_budget",
                                                                              default=None)


# ------------------------------------------------------------------- set-up
def chat_template(settings: Settings, tokenizer: Any, fmt: Any) -> str | None:
    """The tokenizer's template, opening the thinking block when it does not itself."""
    if settings.chat_template or fmt is None or not fmt.start:
        return settings.chat_template
    base = getattr(tokenizer, "chat_template", None)
    if not isinstance(base, str):
        return None
    try:
        opens = render_generation_prompt(tokenizer).rstrip().endswith(fmt.start.rstrip())
    except Exception:
        return None
    if opens:
        return None
    return (base + "{%- if add_generation_prompt and (enable_thinking is not defined or "
            "enable_thinking) %}" + fmt.start + "{%- endif %}")


def vllm_args(settings: Settings, template: str | None, reasoning: bool) -> Any:
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    argv = ["--model", settings.model, "--served-model-name", settings.model_name,
            "--disable-log-stats"]
    if settings.tokenizer:
        argv += ["--tokenizer", settings.tokenizer]
    if reasoning:
        argv += ["--reasoning-parser", "s1"]
    if settings.enable_auto_tool_choice:
        argv += ["--enable-auto-tool-choice"]
    if settings.tool_call_parser:
        argv += ["--tool-call-parser", settings.tool_call_parser]
    if template:
        argv += ["--chat-template", template]
    args = make_arg_parser(FlexibleArgumentParser()).parse_args(argv)
    if reasoning:  # vLLM's launcher merges this flag into the config; so do we
        args.structured_outputs_config.reasoning_parser = "s1"
    return args


async def init(state: Any, engine: Any, serving: Serving, settings: Settings) -> None:
    """Build vLLM's serving objects on ``state`` (what vLLM's routers read)."""
    from vllm.entrypoints.launchers.api_server.app_state import init_app_state

    import server.s1_parser  # noqa: F401  (registers the parser in this process)

    ft = serving.model.format_tokens
    template = chat_template(settings, serving.model.tokenizer, ft.fmt if ft else None)
    args = vllm_args(settings, template, reasoning=ft is not None)
    install_hook(engine, serving)
    await init_app_state(engine, state, args, ("generate",))


# --------------------------------------------------------------- the budget
def budget_from_body(body: dict, settings: Settings) -> BudgetRequest:
    try:
        fields = BudgetFields.model_validate({k: body[k] for k in BUDGET_KEYS if k in body})
    except ValidationError as exc:
        err = exc.errors()[0]
        param = str(err["loc"][0]) if err.get("loc") else None
        raise bad_request(f"{param}: {err['msg']}", param) from None
    hi, soft = fields.thinking_max, False
    effort = body.get("reasoning_effort")
    reasoning = body.get("reasoning")
    if isinstance(reasoning, dict) and reasoning.get("effort"):
        effort = reasoning["effort"]
    thinking = body.get("thinking")
    if hi is None and isinstance(thinking, dict):
        if thinking.get("type") == "enabled" and isinstance(thinking.get("budget_tokens"), int):
            hi = thinking["budget_tokens"]
        elif thinking.get("type") == "disabled":
            hi = 0
    if hi is None and effort is not None:
        if effort not in EFFORT_BUDGETS:
            raise bad_request(f"unknown reasoning effort {effort!r}; one of "
                              f"{', '.join(EFFORT_BUDGETS)}", "reasoning_effort")
        hi, soft = EFFORT_BUDGETS[effort], True
    user_max = next((body[k] for k in ("max_completion_tokens", "max_tokens",
                                       "max_output_tokens") if body.get(k) is not None), None)
    n = body.get("n") if isinstance(body.get("n"), int) else 1
    return BudgetRequest(fields.thinking_min, hi, fields.thinking_continuation,
                         user_max if isinstance(user_max, int) else None, soft, max(1, n))


def _serving(request: Request) -> Serving:
    from server.routes import get_serving

    return get_serving(request)


async def budget_dependency(request: Request) -> None:
    """For vLLM's routers: 503 while loading, the budget, admission (429)."""
    request.state.vllm_served = True
    serving = _serving(request)
    try:
        body = await request.json()
    except ValueError:
        return  # vLLM's router answers the malformed body
    if not isinstance(body, dict):
        return
    tokens = body.get("tokens")
    if request.url.path == "/detokenize" and isinstance(tokens, list):
        # vLLM's tokenizer call raises OverflowError (a 500) on ids past 2**32.
        size = serving.model.vocab_size
        if any(not isinstance(t, int) or isinstance(t, bool) or not 0 <= t < size
               for t in tokens):
            raise bad_request(f"tokens must be token ids in [0, {size})", "tokens")
    budget = budget_from_body(body, serving.settings)
    serving.admit(budget.n).release()  # the 429 check; the hook holds the real ticket
    BUDGET.set(budget)


def _prompt_opens(ft: Any, ids: list[int]) -> bool:
    from server.s1_parser import _last

    if not ft.fmt.start:
        return True
    start = _last(ids, ft.start_ids)
    return start >= 0 and start > _last(ids, ft.end_ids)


class BudgetRejected(ValueError):
    """A budget that does not fit this request, found once vLLM rendered the prompt.

    A ValueError, so vLLM's serving classes answer it as a bad request where they catch
    one; :func:`delegate` turns it into our 400 where they let it through."""

    def __init__(self, error: APIError) -> None:
        super().__init__(error.message)
        self.error = error


def apply_budget(serving: Serving, req: BudgetRequest, prompt: Any, params: Any) -> None:
    """Budget -> ``params.extra_args``; the answer reserve -> ``params.max_tokens``."""
    from vllm.renderers.inputs.preprocess import extract_prompt_components

    from server.logits_processor import budget_extra_args

    ft = serving.model.format_tokens
    lo, hi = serving._budget(SimpleNamespace(thinking_min=req.thinking_min,
                                             thinking_max=req.thinking_max))
    if ft is None:
        if (lo is not None or hi is not None) and not req.soft_max:
            raise BudgetRejected(APIError(
                400, "this model has no thinking format, so thinking_min/thinking_max "
                "cannot be enforced; start the server with --thinking-format",
                "thinking_max" if hi is not None else "thinking_min"))
        return
    ids = list(extract_prompt_components(serving.engine.model_config, prompt).token_ids or [])
    room = serving.model.max_model_len - len(ids)
    if req.soft_max and hi is not None:
        hi = min(hi, max(0, room // 2))
        lo = None if lo is None else min(lo, hi)
    cont = req.thinking_continuation or serving.settings.thinking_continuation
    spec = ft.spec(thinking_min=lo, thinking_max=hi,
                   continuation_ids=serving._continuation_ids(cont),
                   prompt_opens=_prompt_opens(ft, ids),
                   # only its ending matters (does thinking start on a new line?)
                   prompt_text=serving.model.tokenizer.decode(ids[-4:]))
    if params.structured_outputs is not None:
        spec = dataclasses.replace(spec, answer_prefix_ids=())  # the grammar owns the answer
    try:
        params.max_tokens = serving._max_tokens(SimpleNamespace(max_tokens=req.max_tokens),
                                                spec, room)
    except APIError as exc:
        raise BudgetRejected(exc) from None
    if spec.active:
        seed = params.seed if params.seed is not None else fanout.fresh_seed()
        params.extra_args = {**(params.extra_args or {}), **budget_extra_args(spec, seed)}


def install_hook(engine: Any, serving: Serving) -> None:
    """Wrap ``engine.generate``: requests from vLLM's serving layer get the budget."""
    original = engine.generate

    def generate(prompt: Any, sampling_params: Any, request_id: str, *args: Any,
                 **kwargs: Any) -> AsyncIterator[Any]:
        req = BUDGET.get()
        if req is None:  # the native path, or a request without a budget dependency
            return original(prompt, sampling_params, request_id, *args, **kwargs)
        apply_budget(serving, req, prompt, sampling_params)
        ticket = Ticket(serving, sampling_params.n)
        return _held(original(prompt, sampling_params, request_id, *args, **kwargs), ticket)

    engine.generate = generate


async def _held(stream: AsyncIterator[Any], ticket: Ticket) -> AsyncIterator[Any]:
    try:
        async for item in stream:
            yield item
    finally:
        ticket.release()
        await stream.aclose()


# ---------------------------------------------- chat and completions, delegated
def vllm_response(result: Any) -> Any:
    """A vLLM serving result (error, response object or SSE generator) as HTTP."""
    from vllm.entrypoints.serve.engine.protocol import ErrorResponse

    if isinstance(result, ErrorResponse):
        return JSONResponse(result.model_dump(), status_code=result.error.code)
    if hasattr(result, "model_dump"):
        return JSONResponse(result.model_dump())
    return StreamingResponse(result, media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache"})


async def delegate(request: Request, kind: str) -> Any:
    """Serve a chat or completions request with vLLM's serving class, budgeted."""
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
    from vllm.entrypoints.openai.completion.protocol import CompletionRequest

    request.state.vllm_served = True
    await budget_dependency(request)
    body = await request.json()
    clean = {k: v for k, v in body.items() if k not in BUDGET_KEYS}
    model = ChatCompletionRequest if kind == "chat" else CompletionRequest
    try:
        vreq = model.model_validate(clean)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = [str(p) for p in err.get("loc", ())]
        raise bad_request(f"{'.'.join(loc) or 'body'}: {err['msg']}",
                          loc[0] if loc else None) from None
    state = request.app.state
    try:
        if kind == "chat":
            result = await state.openai_serving_chat.create_chat_completion(vreq, request)
        else:
            result = await state.openai_serving_completion.create_completion(vreq, request)
    except BudgetRejected as exc:
        raise exc.error from None
    return vllm_response(result)


# Fields that only vLLM's serving classes honour: a request using one is delegated.
def _fields(model: Any) -> frozenset[str]:
    names = set(model.model_fields)
    names.update(f.alias for f in model.model_fields.values() if f.alias)
    return frozenset(names)


def needs_vllm(kind: str, body: Any) -> bool:
    """True when the request uses a field our native path does not implement."""
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
    from vllm.entrypoints.openai.completion.protocol import CompletionRequest

    extra = set((body.model_extra or {}).keys())
    if kind == "chat":
        known = _fields(ChatCompletionRequest)
        for m in body.messages:
            if m.model_extra or m.role == "tool" or (
                    isinstance(m.content, list) and any(p.type != "text" for p in m.content)):
                return True
    else:
        known = _fields(CompletionRequest)
    return bool(extra & known)

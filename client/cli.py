"""``s1-client`` / ``python -m client``: talk to an s1-serve server from a shell.

    s1-client chat "How many r in raspberry?" --thinking-max 512 --thinking-min 64 --stream
    s1-client complete "<|im_start|>think\\n" --thinking-max 32 --json
    s1-client models
    s1-client health --wait 60

Connection options (``--base-url``, ``--api-key`` ...) go before or after the
command; they default to ``S1_BASE_URL`` and ``S1_API_KEY``. Errors are one line
on stderr, and the exit status says what kind of failure it was (see EXIT_*).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from client.config import API_KEY_ENV, BASE_URL_ENV, DEFAULT_BASE_URL
from client.errors import APIStatusError, APITimeoutError, AuthenticationError, S1Error
from client.render import Printer
from client.sync_client import Client

EXIT_OK = 0
EXIT_API_ERROR = 1      # the server answered with an error (4xx / 5xx)
EXIT_USAGE = 2          # bad command line (argparse's own code)
EXIT_CONNECTION = 3     # no answer: refused, unreachable, timed out
EXIT_NOT_READY = 4      # health: the server is up but not serving (loading / dead)
EXIT_INTERRUPTED = 130

EPILOG = (f"environment: {BASE_URL_ENV} (default {DEFAULT_BASE_URL}), {API_KEY_ENV}. "
          f"exit status: {EXIT_OK} ok, {EXIT_API_ERROR} server error answer, {EXIT_USAGE} bad "
          f"usage, {EXIT_CONNECTION} cannot connect / timeout, {EXIT_NOT_READY} server not "
          f"ready (health), {EXIT_INTERRUPTED} interrupted.")


def _connection_options(parser: argparse.ArgumentParser, top: bool) -> None:
    """Added to the main parser and to each command; a command's copy defaults to
    SUPPRESS so that a value given before the command is not overwritten."""
    def default(value: Any) -> Any:
        return value if top else argparse.SUPPRESS

    group = parser.add_argument_group("connection")
    group.add_argument("--base-url", default=default(None),
                       help=f"server URL (env {BASE_URL_ENV}; default {DEFAULT_BASE_URL})")
    group.add_argument("--api-key", default=default(None), help=f"API key (env {API_KEY_ENV})")
    group.add_argument("--timeout", type=float, default=default(600.0),
                       help="seconds per request (default 600)")
    group.add_argument("--retries", type=int, default=default(3),
                       help="retries on connection errors, 429 and 503 (default 3)")
    group.add_argument("--color", choices=("auto", "always", "never"), default=default("auto"),
                       help="dim the thinking with ANSI codes (auto: when stdout is a terminal)")
    group.add_argument("-v", "--verbose", action="store_true", default=default(False),
                       help="log retries to stderr")


def _generation_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prompt", help="the prompt ('-' reads it from stdin)")
    parser.add_argument("--model", help="model name (default: the server's)")
    parser.add_argument("--thinking-min", type=int, help="fewest thinking tokens")
    parser.add_argument("--thinking-max", type=int, help="most thinking tokens")
    parser.add_argument("--thinking-waits", type=int, help="ignore the end of thinking this "
                        "many times (s1's thinking_n_ignore): that many continuations, then "
                        "the next end attempt ends thinking")
    parser.add_argument("--continuation", help="string appended when thinking is extended "
                        "(server default 'Wait'; '' suppresses the end attempt only)")
    parser.add_argument("--deadline-ms", type=int, help="cut thinking this many milliseconds "
                        "after the request arrives (thinking_deadline_ms)")
    parser.add_argument("--early-stop", type=_early_stop, metavar="K,M",
                        help="probe the answer every K thinking tokens, cut thinking once M "
                        "probes in a row agree (thinking_early_stop)")
    parser.add_argument("--max-tokens", type=int, help="thinking + answer tokens")
    parser.add_argument("--temperature", type=float, help="0 for greedy")
    parser.add_argument("--top-p", type=float)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--stop", action="append", help="stop string (repeatable)")
    parser.add_argument("--stream", action="store_true", help="print tokens as they come")
    parser.add_argument("--json", action="store_true", help="print the raw JSON response "
                        "(with --stream: one JSON chunk per line)")
    parser.add_argument("--no-thinking", action="store_true", help="do not print the thinking")


def _early_stop(text: str) -> dict[str, int]:
    """``K,M`` -> ``{"every": K, "agree": M}`` (the server checks the values)."""
    try:
        every, agree = (int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give K,M (two integers, e.g. 16,2)") \
            from None
    return {"every": every, "agree": agree}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="s1-client", epilog=EPILOG, description=
                                     "Client for s1-serve (OpenAI-compatible, with thinking "
                                     "budgets).")
    _connection_options(parser, top=True)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chat = commands.add_parser("chat", help="chat completion of one user message",
                               epilog=EPILOG)
    _generation_options(chat)
    chat.add_argument("--system", help="system message")
    complete = commands.add_parser("complete", help="raw text completion", epilog=EPILOG)
    _generation_options(complete)
    models = commands.add_parser("models", help="list the served models", epilog=EPILOG)
    models.add_argument("--json", action="store_true", help="print the raw JSON")
    health = commands.add_parser("health", help="is the model loaded? (exit 0 when ok)",
                                 epilog=EPILOG)
    health.add_argument("--json", action="store_true", help="print the raw JSON")
    health.add_argument("--wait", type=float, metavar="SECONDS",
                        help="poll until ready, at most this long")
    for sub in (chat, complete, models, health):
        _connection_options(sub, top=False)
    return parser


def _fields(args: argparse.Namespace) -> dict[str, Any]:
    fields = {"model": args.model, "thinking_min": args.thinking_min,
              "thinking_max": args.thinking_max, "thinking_waits": args.thinking_waits,
              "thinking_continuation": args.continuation,
              "thinking_deadline_ms": args.deadline_ms,
              "thinking_early_stop": args.early_stop, "max_tokens": args.max_tokens,
              "temperature": args.temperature, "top_p": args.top_p, "seed": args.seed,
              "stop": args.stop}
    if getattr(args, "system", None) is not None:
        fields["system"] = args.system
    return {k: v for k, v in fields.items() if v is not None}


def _generate(client: Client, args: argparse.Namespace, printer: Printer) -> int:
    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    call = client.chat if args.command == "chat" else client.complete
    fields = _fields(args)
    if not args.stream:
        result = call(prompt, **fields)
        if args.json:
            printer.json(result.raw)
        else:
            printer.result(result)
        return EXIT_OK
    with call(prompt, stream=True, **fields) as stream:
        if args.json:
            for chunk in stream.iter_raw():
                printer.json(chunk, indent=None)
                printer.out.flush()
        else:
            printer.stream(stream)
    return EXIT_OK


def _health(client: Client, args: argparse.Namespace, printer: Printer) -> int:
    health = client.wait_ready(timeout=args.wait) if args.wait else client.health()
    if args.json:
        printer.json(health.model_dump(exclude_none=True))
    else:
        printer.out.write(health.status + (f": {health.detail}" if health.detail else "") + "\n")
    return EXIT_OK if health.ok else EXIT_NOT_READY


def _models(client: Client, args: argparse.Namespace, printer: Printer) -> int:
    models = client.models()
    if args.json:
        printer.json({"object": "list", "data": [m.model_dump() for m in models]})
        return EXIT_OK
    for m in models:
        extra = ", ".join(f"{k} {v}" for k, v in (("context", m.max_model_len),
                                                  ("thinking format", m.thinking_format))
                          if v is not None)
        printer.out.write(m.id + (f"  ({extra})" if extra else "") + "\n")
    return EXIT_OK


def _explain(error: S1Error) -> tuple[str, int]:
    """One line for stderr, and the exit status."""
    if isinstance(error, APIStatusError):
        line = f"HTTP {error.status} {type(error).__name__}: {error}"
        if isinstance(error, AuthenticationError):
            line += f" (pass --api-key or set {API_KEY_ENV})"
        return line, EXIT_API_ERROR
    tries = f" after {error.attempts} attempts" if error.attempts > 1 else ""
    line = f"{type(error).__name__}{tries}: {error}"
    if not isinstance(error, APITimeoutError):
        line += f" (is the server running? set --base-url or {BASE_URL_ENV})"
    return line, EXIT_CONNECTION


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.verbose:
        logging.basicConfig(level=logging.INFO, format="s1-client: %(message)s")
    color = args.color == "always" or (args.color == "auto" and sys.stdout.isatty()
                                       and not os.environ.get("NO_COLOR"))
    printer = Printer(sys.stdout, color, show_thinking=not getattr(args, "no_thinking", False))
    handlers = {"chat": _generate, "complete": _generate, "models": _models,
                "health": _health}
    try:
        with Client(args.base_url, args.api_key, timeout=args.timeout,
                    max_retries=args.retries) as client:
            return handlers[args.command](client, args, printer)
    except S1Error as error:
        sys.stdout.flush()
        line, code = _explain(error)
        print(f"s1-client: error: {line}", file=sys.stderr)
        return code
    except ValueError as error:  # bad argument values caught before sending
        print(f"s1-client: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("s1-client: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # e.g. piped into `head`
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())

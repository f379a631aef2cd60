"""``python -m server`` / ``s1-serve``: vLLM's server with the s1 layer and s1's defaults.

The command line is vLLM's (:mod:`server.api.cli`); the engine, the app, its routes,
auth and errors are vLLM's own, built from that command line with the s1 endpoint plugin
(:mod:`server.api.plugin`). What this adds is the front (:mod:`server.api.front`: the port
answers while the model loads) and the process lifecycle:

SIGTERM and Ctrl-C stop accepting connections, let in-flight requests finish
for a grace period (then abort them), shut the engine down and exit 0. When the
engine dies or fails to start, :mod:`server.api.watchdog` stops the server the same way,
and the process exits 3 so that a restart policy brings it back.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator


def main(argv: list[str] | None = None) -> None:
    from server.api.cli import parse

    args, settings = parse(argv)
    for var, sub in (("VLLM_CACHE_ROOT", "vllm"), ("TORCHINDUCTOR_CACHE_DIR", "inductor")):
        os.environ.setdefault(var, os.path.join(".cache", sub))
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from server.engine.preflight import run_preflight

    run_preflight(settings)  # exits with values that fit before vLLM spends minutes loading
    import uvicorn
    from vllm.entrypoints.launchers.launcher import setup_server

    from server.api import plugin
    from server.api.front import Front, load_vllm_app
    from server.api.watchdog import ENGINE_DEATH_EXIT_CODE, HARD_EXIT_S
    from server.engine.loader import prepare_environment

    prepare_environment(settings)
    os.environ["VLLM_PLUGINS"] = plugins_with_s1(os.environ.get("VLLM_PLUGINS"))
    plugin.use_settings(settings)
    if not settings.exit_on_engine_death:  # vLLM's own error handlers stop the server too
        os.environ["VLLM_KEEP_ALIVE_ON_ENGINE_DEATH"] = "1"
    # vLLM's: checks the parsers, binds the socket (listening once uvicorn serves it).
    _, sock = setup_server(args, reuse_port=False)

    class Server(uvicorn.Server):
        """uvicorn re-raises SIGTERM after its graceful shutdown (exit status -15);
        a requested stop should exit 0, so the signals are handled here."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            signals = (signal.SIGINT, signal.SIGTERM)
            previous = {sig: signal.signal(sig, self.handle_exit) for sig in signals}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

        exit_code = 0

        def stop_with(self, code: int) -> None:
            """Graceful stop (in-flight responses flush), then exit ``code``; from the loop."""
            self.exit_code = code
            self.should_exit = True
            # Guard against a hang in the graceful path, which expects a live engine.
            timer = threading.Timer(HARD_EXIT_S, _hard_exit, (code, HARD_EXIT_S))
            timer.daemon = True
            timer.start()

    async def load(front: Front) -> tuple[object, object]:
        return await load_vllm_app(front, args, settings, server)

    front = Front(load, keys=settings.all_api_keys(), exempt=settings.auth_exempt_health,
                  max_body=settings.max_body_bytes,
                  exit_on_death=settings.exit_on_engine_death)
    config = uvicorn.Config(front, host=args.host, port=args.port, log_level=logging.getLevelName(settings.log_level.upper()),
                            access_log=False, lifespan="on",
                            root_path=args.root_path or "", ssl_keyfile=args.ssl_keyfile,
                            ssl_certfile=args.ssl_certfile, ssl_ca_certs=args.ssl_ca_certs,
                            ssl_cert_reqs=args.ssl_cert_reqs,
                            ssl_ciphers=args.ssl_ciphers,
                            h11_max_incomplete_event_size=args.h11_max_incomplete_event_size,
                            timeout_keep_alive=keep_alive_s(),
                            timeout_graceful_shutdown=settings.shutdown_grace_s)
    server = Server(config)
    front.request_exit = server.stop_with
    server.run(sockets=[sock])
    if not server.started:  # the app's startup raised
        sys.exit(ENGINE_DEATH_EXIT_CODE)
    if server.exit_code:
        sys.exit(server.exit_code)
    if front.died and settings.exit_on_engine_death:
        # vLLM's error handler (a request that met the dead engine) stopped the server
        # before the watchdog's next look.
        from server.api.watchdog import log_exit

        log_exit(front)
        logging.shutdown()
        sys.exit(ENGINE_DEATH_EXIT_CODE)


def plugins_with_s1(current: str | None) -> str:
    """``VLLM_PLUGINS`` naming ``s1`` too: vLLM loads endpoint plugins only when that
    variable names them. Unset, it means "every plugin" for vLLM's other plugin groups:
    keep that by naming every installed one."""
    from importlib.metadata import entry_points

    from server.api.plugin import NAME

    if current is None:
        names = {ep.name for group in ("vllm.general_plugins", "vllm.platform_plugins",
                                       "vllm.io_processor_plugins", "vllm.stat_logger_plugins")
                 for ep in entry_points(group=group)}
    else:
        names = {n.strip() for n in current.split(",") if n.strip()}
    return ",".join(sorted(names | {NAME}))


def keep_alive_s() -> int:
    """vLLM's ``VLLM_HTTP_TIMEOUT_KEEP_ALIVE`` when set; else 30 s, not vLLM's 5 s: fewer
    clients reuse a connection just as the server closes it (the soak saw 5 such
    ReadErrors at 5 s)."""
    raw = os.environ.get("VLLM_HTTP_TIMEOUT_KEEP_ALIVE")
    if not raw:
        return 30
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise SystemExit(f"VLLM_HTTP_TIMEOUT_KEEP_ALIVE={raw!r}: give a whole number of "
                         "seconds (0 or more), or unset it for s1-serve's 30 s")
    return value


def _hard_exit(code: int, waited: float) -> None:
    logging.getLogger(__name__).error("the graceful stop took over %g s; exiting now", waited)
    logging.shutdown()
    os._exit(code)


if __name__ == "__main__":
    main()

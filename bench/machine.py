"""The machine a benchmark runs on: its environment before vLLM is imported, and the
CPU model, cores and library versions for the report."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path


def prepare_env(cache: Path) -> None:
    """Caches and temporary files under ``cache`` (git-ignored), no hub access, and a
    2 GiB CPU KV cache; values already in the environment win. Call before vLLM loads."""
    for name, sub in (("VLLM_CACHE_ROOT", "vllm"), ("TORCHINDUCTOR_CACHE_DIR", "inductor"),
                      ("TMPDIR", "tmp")):
        os.environ.setdefault(name, str(cache / sub))
        Path(os.environ[name]).mkdir(parents=True, exist_ok=True)
    for name, value in (("HF_HUB_OFFLINE", "1"), ("TOKENIZERS_PARALLELISM", "false"),
                        ("VLLM_CPU_KVCACHE_SPACE", "2")):
        os.environ.setdefault(name, value)


def machine_info() -> dict[str, str]:
    """CPU model name (from lscpu when present), core count, vLLM/torch/Python versions."""
    model = platform.processor() or "unknown"
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in lscpu.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    import torch
    import vllm

    return {"cpu": model, "cores": str(os.cpu_count()), "vllm": vllm.__version__,
            "torch": torch.__version__, "python": platform.python_version()}

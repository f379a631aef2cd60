"""What a benchmark ran on: CPU model, cores and library versions, for its report."""

from __future__ import annotations

import os
import platform
import subprocess


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

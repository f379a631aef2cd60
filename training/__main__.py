"""`s1-train` / `python -m training`: the s1 SFT recipe from flags and/or a YAML file.

    s1-train --help
    s1-train --config training/configs/s1_32b_16xh100.yaml --output-dir runs/s1-32b
    s1-train --model ./tiny --data data/train.jsonl --max-steps 20 --print-config
"""

from __future__ import annotations

import sys

import yaml

from training.config import load_config


def main(argv: list[str] | None = None) -> int:
    try:
        cfg, print_only = load_config(argv)
    except ValueError as exc:
        print(f"s1-train: error: {exc}", file=sys.stderr)
        return 2
    if print_only:
        print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
        return 0
    from training.sft import run

    run(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())

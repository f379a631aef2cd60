"""Tiny local checkpoints built from nothing: a byte-level BPE tokenizer and a random Qwen2.

Why: the test suite and the benchmarks need a real Hugging Face checkpoint that vLLM and
transformers load, with the chat template and special tokens of the model families the
server supports (s1, s1 with a prompt-opened thinking block, `<think>` models), but no
model hub is reachable. Everything here is generated locally in a few seconds, seeded,
and idempotent: a directory already built with the same parameters is reused.

API:
    build_tokenizer(out_dir, chat_format="s1", corpus=None, vocab_size=512)
    build_random_model(out_dir, tokenizer, hidden_size=64, ...)
    build_tiny_checkpoint(out_dir, chat_format="s1", seed=0) -> Path
    chat_template(chat_format) -> str
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterable, Sequence
from pathlib import Path

from transformers import PreTrainedTokenizerFast

ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
QWEN_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
CHAT_FORMATS = ("s1", "s1-open", "think")

# The template body shared by every format: ChatML turns, optional default system message.
_TURNS = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
)
_DEFAULT_SYSTEM = (
    "{%- if messages[0]['role'] != 'system' %}"
    "{{- '<|im_start|>system\\n" + QWEN_SYSTEM + "<|im_end|>\\n' }}"
    "{%- endif %}"
)
_NO_DEFAULT_SYSTEM = ""
_GENERATION_PROMPTS = {
    "s1": "<|im_start|>assistant\\n",
    "s1-open": "<|im_start|>assistant\\n<|im_start|>think\\n",
    "think": "<|im_start|>assistant\\n<think>\\n",
}


def chat_template(chat_format: str) -> str:
    """Jinja chat template for one of CHAT_FORMATS (Qwen2.5 ChatML style).

    "s1" and "s1-open" add Qwen's default system message when none is given, like the s1
    models; "think" (DeepSeek-R1 / Qwen3 style) adds none. Only the generation prompt differs.
    """
    if chat_format not in CHAT_FORMATS:
        raise ValueError(f"unknown chat_format {chat_format!r}; expected one of {CHAT_FORMATS}")
    system = _NO_DEFAULT_SYSTEM if chat_format == "think" else _DEFAULT_SYSTEM
    prompt = (
        "{%- if add_generation_prompt %}{{- '"
        + _GENERATION_PROMPTS[chat_format]
        + "' }}{%- endif %}"
    )
    return system + _TURNS + prompt


def default_corpus(seed: int = 0, lines: int = 400) -> list[str]:
    """A small built-in English and arithmetic corpus, generated in code (no downloads).

    It contains the words the reasoning formats rely on ("think", "answer", "Wait", "Final",
    "Answer") so that they get merged into few tokens.
    """
    rng = random.Random(seed)
    subjects = ["The model", "A student", "We", "The answer", "This number", "Alice", "Bob"]
    verbs = ["counts", "checks", "adds", "thinks about", "writes", "finds", "solves"]
    objects = ["the letters", "the sum", "the question", "each step", "the total", "the word"]
    words = ["raspberry", "strawberry", "banana", "letter", "number", "reason", "budget"]
    out = [
        "Wait, let me check that again. Final Answer: 42.",
        "Let me think step by step. Answer: 7.",
        "think answer Wait Final Answer think answer Wait Final Answer",
        "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.",
        "system user assistant think answer",
    ]
    for _ in range(lines):
        a, b = rng.randint(0, 99), rng.randint(0, 99)
        kind = rng.randrange(4)
        if kind == 0:
            out.append(f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)}.")
        elif kind == 1:
            out.append(f"What is {a} + {b}? Let me think. {a} + {b} = {a + b}. Answer: {a + b}")
        elif kind == 2:
            w = rng.choice(words)
            out.append(f"How many {w[0]} in {w}? Wait, I should count again. Final Answer: 1")
        else:
            out.append(f"So {a} * {b} = {a * b}. Wait, check: yes. The answer is {a * b}.")
    return out


def _special_tokens(chat_format: str) -> list[str]:
    tokens = [ENDOFTEXT, IM_START, IM_END]
    if chat_format == "think":
        tokens += [THINK_OPEN, THINK_CLOSE]
    return tokens


def _train_bpe(corpus: Iterable[str], vocab_size: int, specials: list[str]):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    return tok


def build_tokenizer(
    out_dir: str | Path,
    *,
    chat_format: str = "s1",
    corpus: Iterable[str] | None = None,
    vocab_size: int = 512,
    extra_tokens: Sequence[str] = (),
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on local text and save it as a HF tokenizer dir.

    `<|endoftext|>` is pad and unk, `<|im_end|>` is eos; chat_format "think" also adds the
    special tokens `<think>` and `</think>`. A vocab_size of 256 + specials or less gives a
    pure byte-level tokenizer (no merges). extra_tokens are added as ordinary (non-special)
    whole-string tokens, e.g. a long fixed system prompt that should cost one position.
    """
    chat_template(chat_format)  # validates chat_format
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    specials = _special_tokens(chat_format)
    text = list(corpus) if corpus is not None else default_corpus()
    raw = _train_bpe(text, vocab_size, specials)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=raw,
        bos_token=None,
        eos_token=IM_END,
        unk_token=ENDOFTEXT,
        pad_token=ENDOFTEXT,
        additional_special_tokens=specials[1:],
        clean_up_tokenization_spaces=False,
        model_max_length=32768,
    )
    if extra_tokens:
        tokenizer.add_tokens(list(extra_tokens))
    tokenizer.chat_template = chat_template(chat_format)
    save_tokenizer(tokenizer, out)
    return tokenizer


def save_tokenizer(tokenizer: PreTrainedTokenizerFast, out_dir: str | Path) -> None:
    """save_pretrained, plus the files older readers look for.

    transformers 5 writes the template to chat_template.jinja only; the template is also put
    in tokenizer_config.json, and a special_tokens_map.json is written.
    """
    out = Path(out_dir)
    tokenizer.save_pretrained(str(out))
    cfg_path = out / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["chat_template"] = tokenizer.chat_template
    cfg_path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n")
    specials = {
        "eos_token": tokenizer.eos_token,
        "pad_token": tokenizer.pad_token,
        "unk_token": tokenizer.unk_token,
        "additional_special_tokens": [
            t for t in tokenizer.all_special_tokens if t not in (ENDOFTEXT, IM_END)
        ]
        + [IM_END],
    }
    (out / "special_tokens_map.json").write_text(json.dumps(specials, indent=2) + "\n")


def build_random_model(
    out_dir: str | Path,
    tokenizer: PreTrainedTokenizerFast,
    *,
    hidden_size: int = 128,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int = 256,
    max_position_embeddings: int = 4096,
    seed: int = 0,
):
    """Save a random-init float32 Qwen2ForCausalLM (safetensors) with its tokenizer.

    generation_config's eos lists `<|im_end|>` then `<|endoftext|>`. Returns the model.
    vLLM's Qwen2 uses head_dim = hidden_size // num_heads, and its CPU attention needs
    head_dim >= 32, hence hidden_size 128 with 4 heads (not 64) by default.
    """
    if hidden_size % num_heads or (hidden_size // num_heads) % 16:
        raise ValueError("hidden_size // num_heads must be a multiple of 16 (32+ for vLLM CPU)")
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    im_end = tokenizer.convert_tokens_to_ids(IM_END)
    eot = tokenizer.convert_tokens_to_ids(ENDOFTEXT)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        head_dim=hidden_size // num_heads,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=eot,
        eos_token_id=im_end,
        pad_token_id=eot,
        torch_dtype="float32",
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config).to(torch.float32).eval()
    model.generation_config = GenerationConfig(
        bos_token_id=eot, eos_token_id=[im_end, eot], pad_token_id=eot
    )
    out = Path(out_dir)
    model.save_pretrained(str(out), safe_serialization=True)
    save_tokenizer(tokenizer, out)
    return model


_STAMP = "tiny_build.json"


def build_tiny_checkpoint(out_dir: str | Path, chat_format: str = "s1", seed: int = 0) -> Path:
    """Build (or reuse) a tiny random checkpoint with the given chat format; returns its path."""
    out = Path(out_dir)
    # Keyed by this file's own bytes: any edit to the tokenizer, template or model builder
    # rebuilds, rather than a machine's stale cache deciding what the tests see.
    source = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()
    params = {"chat_format": chat_format, "seed": seed, "source_sha256": source}
    stamp = out / _STAMP
    if stamp.exists() and json.loads(stamp.read_text()) == params:
        return out
    tokenizer = build_tokenizer(out, chat_format=chat_format)
    build_random_model(out, tokenizer, seed=seed)
    stamp.write_text(json.dumps(params))
    return out


if __name__ == "__main__":
    import sys

    target = sys.argv[1] if len(sys.argv) > 1 else ".cache/tiny-s1"
    fmt = sys.argv[2] if len(sys.argv) > 2 else "s1"
    print(build_tiny_checkpoint(target, chat_format=fmt))

"""Run the s1 SFT recipe with transformers' Trainer: data, model, FSDP, train, save.

Why transformers' `Trainer` and not TRL's `SFTTrainer`: the recipe's only SFT-specific parts
are the formatting and the assistant-only loss mask, and those must be exact and tested
token by token (training/formatting.py). SFTTrainer would re-tokenize and re-mask on its own
terms (its completion-only and chat-template handling has changed shape across TRL
releases), so it would be bypassed anyway and add a pinned dependency. The Trainer gives the
rest: FSDP through accelerate, gradient accumulation with loss normalised over the tokens of
the whole global batch, the cosine schedule, checkpoint/resume, tensorboard/W&B and a
progress bar. The loss is normalised per example by default, as in s1 (training/loss.py,
``loss_normalisation``); ``per_token`` keeps the Trainer's mean over the global batch's tokens.

    result = run(TrainConfig(model="...", data="...", output_dir="..."))
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from training.config import TrainConfig, batch_layout
from training.data import collate
from training.distributed import FsdpPlan, decoder_layer_class, plan_fsdp, world_size
from training.export import DTYPES, save_final
from training.formatting import (
    EncodeReport,
    SFTDataset,
    encode_all,
    generation_prompt,
    open_thinking_template,
)
from training.loss import per_example_trainer_class
from training.sources import load_triples

log = logging.getLogger("s1.train")


@dataclass
class RunResult:
    """What a run produced."""

    output_dir: Path
    report: EncodeReport
    log_history: list[dict[str, Any]]
    global_step: int
    train_seconds: float
    fsdp_active: bool


@dataclass
class PadCollator:
    """Right-pads a batch (training/data.py collate); padding is out of attention and loss."""

    pad_id: int

    def __call__(self, batch: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        return collate(batch, self.pad_id)


def setup_logging() -> None:
    rank = int(os.environ.get("RANK", "0"))
    level = logging.INFO if rank == 0 else logging.WARNING
    logging.basicConfig(stream=sys.stdout, level=level,
                        format=f"%(asctime)s [rank {rank}] %(name)s: %(message)s", force=True)
    import transformers

    transformers.logging.set_verbosity_warning()


def resolve_resume(cfg: TrainConfig) -> str | None:
    """'latest' -> the newest checkpoint-N in output_dir (None if there is none yet)."""
    if cfg.resume_from_checkpoint in (None, ""):
        return None
    if cfg.resume_from_checkpoint == "latest":
        from transformers.trainer_utils import get_last_checkpoint

        found = get_last_checkpoint(cfg.output_dir) if Path(cfg.output_dir).is_dir() else None
        log.info("resume: %s", found or "no checkpoint yet in output_dir, starting fresh")
        return found
    if not Path(cfg.resume_from_checkpoint).is_dir():
        raise FileNotFoundError(f"checkpoint not found: {cfg.resume_from_checkpoint}")
    return cfg.resume_from_checkpoint


def training_arguments(cfg: TrainConfig, accumulation: int, fsdp: FsdpPlan):
    from transformers import TrainingArguments

    fields = {f.name for f in dataclasses.fields(TrainingArguments)}
    warmup = ({"warmup_ratio": cfg.warmup_ratio} if "warmup_ratio" in fields
              else {"warmup_steps": cfg.warmup_ratio})  # transformers 5: a float is a ratio
    report_to = [r.strip() for r in cfg.report_to.split(",") if r.strip() and r != "none"]
    kwargs: dict[str, Any] = dict(
        output_dir=cfg.output_dir,
        num_train_epochs=cfg.num_train_epochs,
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.per_device_batch_size,
        gradient_accumulation_steps=accumulation,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler_type,
        adam_beta1=cfg.adam_beta1,
        adam_beta2=cfg.adam_beta2,
        adam_epsilon=cfg.adam_epsilon,
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm,
        bf16=cfg.bf16,
        # under FSDP, its activation checkpointing does the job (the Trainer refuses both)
        gradient_checkpointing=cfg.gradient_checkpointing and not fsdp.activation_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False},
        seed=cfg.seed,
        data_seed=cfg.seed,
        logging_steps=cfg.logging_steps,
        logging_first_step=True,
        save_strategy=cfg.save_strategy,
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        report_to=report_to or "none",
        run_name=cfg.run_name,
        disable_tqdm=not cfg.progress_bar,
        dataloader_num_workers=cfg.dataloader_num_workers,
        remove_unused_columns=False,
        include_num_input_tokens_seen="non_padding",
        use_cpu=not torch.cuda.is_available(),
        **warmup,
    )
    if fsdp.source == "trainer":
        kwargs.update(fsdp=True, fsdp_config=dict(fsdp.fsdp_config or {}))
    return TrainingArguments(**kwargs)


def load_data(cfg: TrainConfig, tokenizer: Any) -> tuple[SFTDataset, EncodeReport]:
    loaded = load_triples(cfg.data, split=cfg.split, trace=cfg.trace,
                          thinking_column=cfg.thinking_column, attempt_column=cfg.attempt_column,
                          question_column=cfg.question_column, max_examples=cfg.max_examples)
    log.info("data %s: %d rows, trace columns %s / %s, %d skipped (empty fields)",
             cfg.data, loaded.rows, loaded.thinking_column, loaded.attempt_column,
             loaded.skipped)
    examples, report = encode_all(tokenizer, loaded.triples, cfg.block_size, cfg.overlong,
                                  cfg.system_prompt)
    for line in report.summary().splitlines():
        (log.warning if report.overlong and "block_size" in line else log.info)(line)
    if not examples:
        raise ValueError("no training examples left after the block-size policy")
    return SFTDataset(examples), report


def load_model(cfg: TrainConfig):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        cfg.model, dtype=DTYPES[cfg.model_dtype], attn_implementation=cfg.attn_implementation)
    model.config.use_cache = False  # no KV cache in training (and required with checkpointing)
    return model


def run(cfg: TrainConfig, callbacks: list[Any] | None = None) -> RunResult:
    """Train with `cfg` and save the servable checkpoint to cfg.output_dir."""
    from transformers import AutoConfig, AutoTokenizer, DataCollatorWithFlattening, Trainer

    setup_logging()
    cfg.validate()
    world = world_size()
    accumulation = batch_layout(cfg.global_batch_size, cfg.per_device_batch_size, world,
                                cfg.gradient_accumulation_steps)
    layer_cls = decoder_layer_class(AutoConfig.from_pretrained(cfg.model), cfg.fsdp_layer_cls)
    fsdp = plan_fsdp(cfg, layer_cls, torch.cuda.is_available(), world)
    log.info("%d process(es) x per-device batch %d x accumulation %d = global batch %d; "
             "FSDP: %s (wrap %s)", world, cfg.per_device_batch_size, accumulation,
             cfg.global_batch_size, fsdp.source, layer_cls)
    args = training_arguments(cfg, accumulation, fsdp)  # initialises torch.distributed

    tokenizer = AutoTokenizer.from_pretrained(cfg.model)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    with args.main_process_first(desc="tokenize"):
        dataset, report = load_data(cfg, tokenizer)
    template = (open_thinking_template(tokenizer) if cfg.open_thinking
                else tokenizer.chat_template)
    tokenizer.chat_template = template  # intermediate checkpoints carry it too
    log.info("generation prompt of the saved template ends with %r",
             generation_prompt(tokenizer)[-40:])

    model = load_model(cfg)
    steps_per_epoch = math.ceil(len(dataset) / cfg.global_batch_size)
    log.info("model %s: %.1fM parameters; %d examples, ~%d steps per epoch", cfg.model,
             sum(p.numel() for p in model.parameters()) / 1e6, len(dataset), steps_per_epoch)
    collator = (DataCollatorWithFlattening() if cfg.packing
                else PadCollator(tokenizer.pad_token_id))
    trainer_cls = (per_example_trainer_class() if cfg.loss_normalisation == "per_example"
                   else Trainer)
    log.info("loss normalisation: %s", cfg.loss_normalisation)
    trainer = trainer_cls(model=model, args=args, train_dataset=dataset, data_collator=collator,
                      processing_class=tokenizer, callbacks=callbacks)
    if fsdp.enabled and not trainer.is_fsdp_enabled:
        log.warning("FSDP was requested but the accelerator did not enable it (no CUDA?)")
    resume = resolve_resume(cfg)
    start = time.time()
    trainer.train(resume_from_checkpoint=resume)
    seconds = time.time() - start
    info = {"config": cfg.to_dict(), "world_size": world, "gradient_accumulation": accumulation,
            "resumed_from": resume,
            "global_step": trainer.state.global_step, "train_seconds": round(seconds, 1),
            "data": {k: v for k, v in dataclasses.asdict(report).items() if k != "lengths"},
            "log_history": trainer.state.log_history}
    out = save_final(trainer, tokenizer, cfg.output_dir, save_dtype=cfg.save_dtype,
                     chat_template=template, info=info)
    log.info("saved %s (%s safetensors); serve it with: s1-serve --model %s", out,
             cfg.save_dtype, out)
    return RunResult(out, report, list(trainer.state.log_history), trainer.state.global_step,
                     seconds, trainer.is_fsdp_enabled)

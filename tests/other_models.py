"""Tiny randomly initialised base models of other architectures and chat templates, saved as
local folders: what a learner passes as `--model` when they bring their own model (the course
must work with any Hugging Face model folder, and this machine cannot download one)."""

from __future__ import annotations

from pathlib import Path

# Chat templates of other model families, written the way those families write them.
LLAMA3 = (
    "{{ bos_token }}{% for message in messages %}<|start_header_id|>{{ message['role'] }}"
    "<|end_header_id|>\n\n{{ message['content'] | trim }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
PHI3 = (  # turns end with <|end|>, while the tokenizer's eos is another token
    "{% for message in messages %}{{ '<|' + message['role'] + '|>\n' + message['content'] + "
    "'<|end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)
GEMMA = (  # refuses a system message, as Gemma's template does
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}"
    "{{ raise_exception('System role not supported') }}{% endif %}"
    "{% for message in messages %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)
NO_GENERATION_PROMPT = (  # ChatML that ignores add_generation_prompt
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>\n' }}{% endfor %}"
)
KEEP = object()  # the default tokenizer's own chat template (ChatML)


def tiny_model(
    folder: Path,
    arch: str = "llama",
    template: str | None | object = KEEP,
    special_tokens: tuple[str, ...] = (),
    pad: bool = True,
    eos: bool = True,
    context: int = 512,
) -> Path:
    """A tiny random model (`arch`: llama, qwen2 or gpt2) in `folder`, with the course's
    tokenizer given `template` (None: no chat template at all) and `special_tokens`; without
    `pad` / `eos` the tokenizer has no such token. Returns `folder`."""
    import torch
    from transformers import (
        AutoTokenizer,
        GPT2Config,
        GPT2LMHeadModel,
        LlamaConfig,
        LlamaForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
    )

    from ftlab.models import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(None).source)
    if special_tokens:
        tokenizer.add_special_tokens({"additional_special_tokens": list(special_tokens)})
    if template is not KEEP:
        tokenizer.chat_template = template
    if not pad:
        tokenizer.pad_token = None
    if not eos:
        tokenizer.eos_token = None
    vocab = len(tokenizer)
    ids = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id}
    torch.manual_seed(0)
    if arch == "gpt2":
        config = GPT2Config(
            vocab_size=vocab, n_positions=context, n_embd=64, n_layer=2, n_head=2, **ids
        )
        model = GPT2LMHeadModel(config)
    else:
        kind, make = {
            "llama": (LlamaConfig, LlamaForCausalLM),
            "qwen2": (Qwen2Config, Qwen2ForCausalLM),
        }[arch]
        config = kind(
            vocab_size=vocab,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=2,
            max_position_embeddings=context,
            tie_word_embeddings=True,
            **ids,
        )
        model = make(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder

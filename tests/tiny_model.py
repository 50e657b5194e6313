"""A tiny random Llama with a real BPE tokenizer and a chat template, built in under a second."""

from __future__ import annotations

from pathlib import Path
from typing import Any

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Knowledge distillation trains a small student model on a large teacher's outputs.",
    "Answer the question clearly and concisely, with one example.",
] * 50


def trl_chat_template(name: str = "qwen2_5") -> str:
    """A model's own chat template as TRL ships it (`trl/chat_templates/<name>.jinja`), offline.
    `qwen2_5` is Qwen2.5-Instruct's: it renders `tools`, assistant `tool_calls` and `tool` turns,
    and its special tokens (<|im_start|>, <|im_end|>) are the tiny tokenizer's."""
    import trl

    return (Path(trl.__file__).parent / "chat_templates" / f"{name}.jinja").read_text(encoding="utf-8")


def build_tiny_model(
    folder: Path, *, seed: int = 0, vocab_size: int = 1000, chat_template: str | None = None
) -> Path:
    """Same tokenizer for the same vocab_size (BPE training is deterministic); weights from `seed`;
    CHAT_TEMPLATE unless `chat_template` is given."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<|pad|>", "<|im_start|>", "<|im_end|>"]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.train_from_iterator(
        CORPUS,
        trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    from tokenizers import decoders

    tokenizer.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="<|pad|>", eos_token="<|im_end|>", bos_token="<|im_start|>"
    )
    fast.chat_template = CHAT_TEMPLATE if chat_template is None else chat_template
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=fast.pad_token_id,
        eos_token_id=fast.eos_token_id,
        bos_token_id=fast.bos_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder


def one_trl_step(
    dataset: Any, trainer: str, model_dir: Path, out: Path, max_length: int | None = None
) -> Any:
    """TRL's own trainer (`sft` or `dpo`), given the dataset as it is, after one optimizer step;
    `max_length` None keeps whole conversations (tool schemas and all)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

    config, trainer_class = (SFTConfig, SFTTrainer) if trainer == "sft" else (DPOConfig, DPOTrainer)
    args = config(
        output_dir=str(out),
        max_steps=1,
        per_device_train_batch_size=2,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        max_length=max_length,
    )
    built = trainer_class(
        model=AutoModelForCausalLM.from_pretrained(model_dir),
        args=args,
        train_dataset=dataset,  # as written: no column selected or renamed
        processing_class=AutoTokenizer.from_pretrained(model_dir),
    )
    built.train()
    return built

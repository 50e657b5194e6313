"""The teacher's top-k next-token distribution over each response token, from one forward pass.

What is stored for a conversation: its token ids (the prompt rendered by the teacher's chat
template, then the response), how many of them are prompt, and for every response token the k
likeliest tokens at that position with their log-probabilities. Training later compares the
student's distribution with these at the same positions (`synthkd.training.kd`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

Conversation = list[dict[str, Any]]

# The columns a `logits` step adds to every row and `kd` training requires, in the order training
# keeps them: the token ids and top-k (typed by `storage_features`), then the tokenizer fingerprint.
KD_COLUMNS = (
    "kd_input_ids",
    "kd_prompt_length",
    "kd_top_ids",
    "kd_top_logprobs",
    "kd_teacher",
    "kd_vocab_sha256",
    "kd_template_sha256",
)


@dataclass
class TopK:
    """One conversation's teacher distributions. `top_ids[j]` belongs to token
    `input_ids[prompt_length + j]`: the teacher's guesses for it, given every token before it."""

    input_ids: list[int]
    prompt_length: int
    top_ids: list[list[int]]
    top_logprobs: list[list[float]]


def storage_features() -> dict[str, Any]:
    """Arrow types for the stored kd columns. Token ids fit in int32 and log-probabilities need no
    more than float32; left to inference, `datasets` stores int64/float64, twice the bytes, and
    these columns are most of a KD dataset's size."""
    from datasets import Sequence, Value

    ids, logprobs = Value("int32"), Value("float32")
    return {
        "kd_input_ids": Sequence(ids),
        "kd_prompt_length": ids,
        "kd_top_ids": Sequence(Sequence(ids)),
        "kd_top_logprobs": Sequence(Sequence(logprobs)),
    }


def vocabulary_sha256(tokenizer: Any) -> str:
    """Fingerprint of a tokenizer's token -> id map: equal hashes mean token ids mean the same."""
    vocabulary = sorted(tokenizer.get_vocab().items())
    return hashlib.sha256(json.dumps(vocabulary, ensure_ascii=False).encode("utf-8")).hexdigest()


def template_sha256(tokenizer: Any) -> str:
    return hashlib.sha256((tokenizer.chat_template or "").encode("utf-8")).hexdigest()


def tokenizer_fingerprint(tokenizer: Any) -> dict[str, str]:
    """Which tokenizer stored ids belong to: training refuses a student whose vocabulary differs."""
    return {"vocab_sha256": vocabulary_sha256(tokenizer), "template_sha256": template_sha256(tokenizer)}


def tokenize_conversation(tokenizer: Any, messages: Conversation) -> tuple[list[int], int]:
    """Token ids of a conversation whose last message is the answer, and the prompt's length.

    The prompt (up to the assistant's turn) and the rest are tokenized apart and joined, so the
    boundary is exact even where a BPE merge could cross it."""
    if not messages or messages[-1].get("role") != "assistant":
        raise ValueError("a conversation for distillation must end with the assistant's answer")
    prompt = tokenizer.apply_chat_template(messages[:-1], add_generation_prompt=True, tokenize=False)
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    if not full.startswith(prompt):
        raise ValueError("the chat template renders the prompt differently once the answer follows it")
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(full[len(prompt) :], add_special_tokens=False)["input_ids"]
    return prompt_ids + answer_ids, len(prompt_ids)


def teacher_top_k(
    model: Any, tokenizer: Any, conversations: list[Conversation], k: int, batch_size: int = 4
) -> list[TopK]:
    """Run the teacher once over each conversation and keep its top-k log-probabilities at every
    response token. Batches are right-padded; padding never reaches a kept position."""
    import torch

    encoded = [tokenize_conversation(tokenizer, messages) for messages in conversations]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    results: list[TopK] = []
    model.eval()
    for start in range(0, len(encoded), batch_size):
        batch = encoded[start : start + batch_size]
        width = max(len(ids) for ids, _ in batch)
        input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        for row, (ids, _) in enumerate(batch):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            attention[row, : len(ids)] = 1
        with torch.inference_mode():
            logits = model(
                input_ids=input_ids.to(model.device), attention_mask=attention.to(model.device)
            ).logits
        for row, (ids, prompt_length) in enumerate(batch):
            # Position p's logits predict token p + 1: the answer's tokens are predicted from
            # positions prompt_length - 1 .. len - 2.
            scores = logits[row, prompt_length - 1 : len(ids) - 1].float().log_softmax(dim=-1)
            top = scores.topk(min(k, scores.shape[-1]), dim=-1)
            results.append(
                TopK(
                    input_ids=ids,
                    prompt_length=prompt_length,
                    top_ids=top.indices.cpu().tolist(),
                    top_logprobs=top.values.cpu().tolist(),
                )
            )
    return results

"""Before/after evaluation of a student on held-out teacher answers: loss, perplexity, agreement."""

from __future__ import annotations

import math
from typing import Any

from synthkd.curate.rouge import f1_from_lcs, lcs_length, rouge_tokens

SHORT_ANSWER_WORDS = 5  # answers this short are compared exactly, longer ones by ROUGE-L


def _prompt_and_answer(messages: list[dict[str, str]]) -> tuple[list[dict[str, str]], str]:
    return messages[:-1], messages[-1]["content"]


def conversation_ids(
    tokenizer: Any, messages: list[dict[str, str]], tools: list[dict] | None = None
) -> tuple[Any, int]:
    """The conversation's token ids (a 1 x n tensor) and where its final (assistant) message
    starts: the length of the rendered prompt that asks for it."""
    prompt, _ = _prompt_and_answer(messages)
    prefix = tokenizer.apply_chat_template(prompt, tools=tools, add_generation_prompt=True, tokenize=False)
    full = tokenizer.apply_chat_template(messages, tools=tools, tokenize=False)
    prefix_ids = tokenizer(prefix, add_special_tokens=False, return_tensors="pt")["input_ids"]
    return tokenizer(full, add_special_tokens=False, return_tensors="pt")["input_ids"], prefix_ids.shape[1]


def response_loss(
    model: Any, tokenizer: Any, messages: list[dict[str, str]], tools: list[dict] | None = None
) -> tuple[float, int]:
    """Mean cross-entropy of the final (assistant) message given the conversation before it
    (and the tool schemas the conversation may call, rendered by the chat template)."""
    import torch

    full_ids, prompt_length = conversation_ids(tokenizer, messages, tools)
    full_ids = full_ids.to(model.device)
    labels = full_ids.clone()
    labels[:, :prompt_length] = -100  # only the answer's tokens count
    answer_tokens = int((labels != -100).sum())
    if answer_tokens == 0:
        return 0.0, 0
    with torch.inference_mode():
        loss = model(input_ids=full_ids, labels=labels).loss
    return float(loss), answer_tokens


def is_short_answer(teacher_answer: str) -> bool:
    """Whether `agreement` compares against this answer exactly (else by ROUGE-L)."""
    return len(teacher_answer.split()) <= SHORT_ANSWER_WORDS


def agreement(student_answer: str, teacher_answer: str) -> float:
    """1/0 exact match for short answers (case and spacing aside), else ROUGE-L F1."""
    if is_short_answer(teacher_answer):
        return float(" ".join(student_answer.lower().split()) == " ".join(teacher_answer.lower().split()))
    vocabulary: dict[str, int] = {}
    a = [vocabulary.setdefault(t, len(vocabulary)) for t in rouge_tokens(student_answer)]
    b = [vocabulary.setdefault(t, len(vocabulary)) for t in rouge_tokens(teacher_answer)]
    return f1_from_lcs(lcs_length(a, b), len(a), len(b))


def evaluate(
    model: Any,
    tokenizer: Any,
    conversations: list[list[dict[str, str]]],
    max_new_tokens: int,
    answers: list[str] | None = None,
    tools: list[list[dict] | None] | None = None,
) -> dict:
    """Loss and perplexity on the teacher's answers, and agreement of greedy answers with them.
    The greedy answers are appended to `answers` when given (for a judge to compare). `tools`:
    per conversation, the tool schemas it was written with (or None)."""
    import torch

    total_loss, total_tokens, agreements, short_answers = 0.0, 0, [], 0
    model.eval()
    for index, messages in enumerate(conversations):
        row_tools = tools[index] if tools else None
        loss, tokens = response_loss(model, tokenizer, messages, row_tools)
        total_loss += loss * tokens
        total_tokens += tokens
        prompt, answer = _prompt_and_answer(messages)
        encoded = tokenizer.apply_chat_template(
            prompt, tools=row_tools, add_generation_prompt=True, return_tensors="pt", return_dict=True
        ).to(model.device)
        with torch.inference_mode():
            output = model.generate(
                **encoded,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
            )
        generated = tokenizer.decode(output[0, encoded["input_ids"].shape[1] :], skip_special_tokens=True)
        agreements.append(agreement(generated.strip(), answer))
        short_answers += is_short_answer(answer)
        if answers is not None:
            answers.append(generated.strip())
    mean_loss = total_loss / total_tokens if total_tokens else float("nan")
    mean_agreement = round(sum(agreements) / len(agreements), 4) if agreements else None
    metrics = {
        "rows": len(conversations),
        "loss": round(mean_loss, 4),
        "perplexity": round(math.exp(mean_loss), 3) if total_tokens else None,
        "agreement": mean_agreement,
    }
    # Every answer compared exactly (labels, numbers, short facts): agreement is then plain accuracy
    # against the teacher, the figure a classification user looks for.
    if agreements and short_answers == len(agreements):
        metrics["accuracy"] = mean_agreement
    return metrics


def forward_kl(
    teacher: Any, student: Any, tokenizer: Any, conversations: list[list[dict[str, str]]]
) -> float:
    """KL(teacher || student) over the whole vocabulary, per token of the teacher's answers, averaged
    over every answer token: how far the student's next-token distribution is from the teacher's
    where the teacher wrote. Both models share `tokenizer`."""
    import torch

    total, tokens = 0.0, 0
    teacher.eval()
    student.eval()
    for messages in conversations:
        ids, prompt_length = conversation_ids(tokenizer, messages)
        if ids.shape[1] <= prompt_length:
            continue
        # Position p predicts token p + 1: the answer's tokens are predicted from prompt_length - 1 on.
        answer = slice(prompt_length - 1, ids.shape[1] - 1)
        with torch.inference_mode():
            teacher_logprobs = (
                teacher(input_ids=ids.to(teacher.device)).logits[0, answer].float().log_softmax(-1)
            )
            student_logprobs = (
                student(input_ids=ids.to(student.device)).logits[0, answer].float().log_softmax(-1)
            )
        kl = (teacher_logprobs.exp() * (teacher_logprobs - student_logprobs.to(teacher_logprobs.device))).sum(
            -1
        )
        total += float(kl.sum())
        tokens += kl.numel()
    return total / tokens if tokens else float("nan")

"""What scores the student's own answers in RL (`train.method: grpo`), and the same scores on
held-out prompts before and after training.

A verifier is a plain function of the answer and the row's gold answer: TRL's GRPOTrainer calls
it with each batch of completions and the batch's dataset columns. A reward model is a
sequence-classification model (what `train.method: reward` trains): TRL loads and runs it itself
from its folder, and `score_conversations` runs it here for the held-out figure. A judge is a
teacher asked to score each answer with the `judge` step's pointwise rubric, through the
dispatcher and its cache (an answer scored once is never paid for again); its score is scaled to
0..1, and an answer it gave no valid score for gets None, which TRL leaves out of the group.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from synthkd.steps.parsing import ParseError
from synthkd.steps.rationale import normalise_answer, parse_final_answer
from synthkd.training.config import RewardSource, VerifierReward


def answer_text(completion: Any) -> str:
    """The text of one completion as TRL passes it: a string, or (chat prompts) a list of messages
    whose last one is the answer."""
    if isinstance(completion, list):
        return str(completion[-1].get("content") or "") if completion else ""
    return str(completion)


def verify(answer: str, gold: Any, match: str) -> float:
    """1.0 where `answer` matches `gold` the way `match` says (see `VerifierReward`), else 0.0."""
    if match == "regex":
        return float(re.search(str(gold), answer) is not None)
    expected = normalise_answer(str(gold))
    if match == "final_answer":
        try:
            _, final = parse_final_answer(answer)
        except ParseError:
            return 0.0  # no final-answer line: nothing to check, no reward
        return float(normalise_answer(final) == expected)
    if match == "exact":
        return float(normalise_answer(answer) == expected)
    # contains: the gold as a whole word (7 is not in 17), case and spacing aside
    spaced = " ".join(answer.lower().split())
    return float(re.search(rf"(?<![\w.]){re.escape(expected)}(?![\w])", spaced) is not None)


def verifier_reward(config: VerifierReward) -> Callable[..., list[float]]:
    """The reward function TRL's GRPOTrainer calls: completions in, one score each out. The gold
    answers come in as the dataset column of the same name (TRL passes every column)."""

    def reward(completions: list[Any], **columns: Any) -> list[float]:
        golds = columns[config.column]
        return [
            verify(answer_text(c), gold, config.match) for c, gold in zip(completions, golds, strict=True)
        ]

    reward.__name__ = f"verifier_{config.match}"  # TRL logs each reward under its function's name
    return reward


def prompt_text(prompt: Any) -> str:
    """What the user asked, as one text for a judge: a chat prompt's system and user messages."""
    if isinstance(prompt, list):
        return "\n\n".join(str(m.get("content") or "") for m in prompt if m.get("role") != "assistant")
    return str(prompt)


class JudgeReward:
    """Scores answers with a teacher, as the pointwise `judge` step does (same rubric, same parsing,
    one re-ask of an unparseable score), through the dispatcher and its cache."""

    def __init__(self, source: RewardSource, recipe_dir: Path, seed: int) -> None:
        from synthkd.steps.base import CheckContext
        from synthkd.steps.judge import JudgeStep

        assert source.judge is not None
        self.judge, self.seed, self.recipe_dir = source.judge, seed, recipe_dir
        self.low, self.high = source.scale
        self.step = JudgeStep(step="judge", teacher=source.judge, scale=source.scale)
        self.step.check(
            {"instruction", "response"}, CheckContext(recipe_dir, lambda key: f"train.reward.{key}")
        )
        self.__name__ = "judge"  # TRL logs each reward under its function's name

    def __call__(self, prompts: list[Any], completions: list[Any], **_: Any) -> list[float | None]:
        return self.scores([prompt_text(p) for p in prompts], [answer_text(c) for c in completions])

    def scores(self, instructions: list[str], answers: list[str]) -> list[float | None]:
        rows = [
            {"id": f"answer-{index}", "instruction": instruction, "response": answer}
            for index, (instruction, answer) in enumerate(zip(instructions, answers, strict=True))
        ]
        scored = asyncio.run(self._score(rows))
        span = self.high - self.low
        return [None if score is None else (score - self.low) / span for score in scored]

    async def _score(self, rows: list[dict[str, Any]]) -> list[float | None]:
        from synthkd.dispatch.pool import TeacherPool
        from synthkd.steps.base import StepContext

        async with TeacherPool(seed=self.seed) as pool:
            result = await self.step.run(
                rows, StepContext(self.recipe_dir, self.seed, pool.dispatcher(self.judge))
            )
        by_id = {row["id"]: row.get("score") for row in result.rows}
        return [by_id.get(row["id"]) for row in rows]


def held_out_reward(
    source: RewardSource,
    prompts: list[list[dict[str, str]]],
    answers: list[str],
    golds: list[Any] | None,
    recipe_dir: Path | None = None,
    seed: int = 0,
) -> float | None:
    """The mean reward of the student's greedy `answers` to held-out `prompts` (None without any,
    or when a judge scored none of them)."""
    if not answers:
        return None
    if source.verifier is not None:
        scores = [verify(a, g, source.verifier.match) for a, g in zip(answers, golds or [], strict=True)]
    elif source.judge is not None:
        judged = JudgeReward(source, recipe_dir or Path.cwd(), seed).scores(
            [prompt_text(p) for p in prompts], answers
        )
        scores = [score for score in judged if score is not None]
        if not scores:
            return None
    else:
        assert source.model is not None
        conversations = [
            [*p, {"role": "assistant", "content": a}] for p, a in zip(prompts, answers, strict=True)
        ]
        scores = score_conversations(load_reward_model(source.model), conversations)
    return round(sum(scores) / len(scores), 4)


def load_reward_model(model: str) -> tuple[Any, Any]:
    """A sequence-classification model with one output (a reward) and its tokenizer, on the GPU if
    there is one. A causal model's folder loads too, with a new (untrained) score head: the reward
    model before `train.method: reward` has trained it."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from synthkd.teachers.embedded import resolve_model_source

    source = resolve_model_source(model)
    tokenizer = AutoTokenizer.from_pretrained(source)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    loaded = AutoModelForSequenceClassification.from_pretrained(source, num_labels=1, dtype=torch.float32)
    loaded.config.pad_token_id = tokenizer.pad_token_id  # batches of rewards need it to find each end
    if torch.cuda.is_available():
        loaded = loaded.to("cuda")
    return loaded, tokenizer


def score_conversations(model_and_tokenizer: tuple[Any, Any], conversations: list[list[dict]]) -> list[float]:
    """The reward model's score of each whole conversation (its chat template applied)."""
    import torch

    model, tokenizer = model_and_tokenizer
    model.eval()
    scores = []
    for messages in conversations:
        text = tokenizer.apply_chat_template(messages, tokenize=False)
        encoded = tokenizer(text, add_special_tokens=False, return_tensors="pt").to(model.device)
        with torch.inference_mode():
            scores.append(float(model(**encoded).logits[0, 0]))
    return scores


def pair_accuracy(model_and_tokenizer: tuple[Any, Any], pairs: list[dict[str, Any]]) -> dict[str, Any]:
    """How often the reward model scores the chosen answer above the rejected one, on held-out
    preference rows (prompt, chosen, rejected as messages), and by how much on average."""
    chosen = score_conversations(model_and_tokenizer, [[*p["prompt"], *p["chosen"]] for p in pairs])
    rejected = score_conversations(model_and_tokenizer, [[*p["prompt"], *p["rejected"]] for p in pairs])
    margins = [c - r for c, r in zip(chosen, rejected, strict=True)]
    return {
        "rows": len(pairs),
        "pair_accuracy": round(sum(m > 0 for m in margins) / len(margins), 4) if margins else None,
        "mean_margin": round(sum(margins) / len(margins), 4) if margins else None,
    }

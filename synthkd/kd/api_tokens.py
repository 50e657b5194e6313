"""Turn an API's `logprobs` (token strings with their bytes) into token ids of the teacher's own
tokenizer, so a hosted teacher's distributions can be stored like a local one's.

APIs name tokens by text. A byte-level BPE vocabulary (GPT-2, Llama 3, Qwen, SmolLM) spells each
byte as a printable character, a SentencePiece one marks spaces with U+2581; a token is looked up
as sent, then in each of those spellings. A row whose answer has a token that maps to nothing is
left without distributions (it still trains by cross-entropy); an alternative that maps to
nothing is left out, so its probability stays in the tail bucket.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from synthkd.kd.topk import TopK

SENTENCEPIECE_SPACE = "\u2581"


@cache
def _byte_level_alphabet() -> dict[int, str]:
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    return bytes_to_unicode()


def token_id(vocabulary: dict[str, int], token: str, raw: list[int] | None) -> int | None:
    """The id of an API token in the teacher's vocabulary, or None."""
    if token in vocabulary:
        return vocabulary[token]
    data = bytes(raw) if raw is not None else token.encode("utf-8")
    alphabet = _byte_level_alphabet()
    byte_level = "".join(alphabet[byte] for byte in data)
    if byte_level in vocabulary:
        return vocabulary[byte_level]
    return vocabulary.get(token.replace(" ", SENTENCEPIECE_SPACE))


def api_top_k(
    tokenizer: Any, prompt: list[dict[str, Any]], answer: str, logprobs: list[dict[str, Any]] | None, k: int
) -> TopK | None:
    """The stored form of an API answer's logprobs, or None when they cannot be mapped to ids."""
    if not logprobs or "".join(entry["token"] for entry in logprobs) != answer:
        return None
    vocabulary = tokenizer.get_vocab()
    answer_ids, top_ids, top_logprobs = [], [], []
    for entry in logprobs:
        chosen = token_id(vocabulary, entry["token"], entry.get("bytes"))
        if chosen is None:
            return None
        alternatives: dict[int, float] = {}
        for alternative in entry.get("top_logprobs") or []:
            found = token_id(vocabulary, alternative["token"], alternative.get("bytes"))
            if found is not None and found not in alternatives:
                alternatives[found] = float(alternative["logprob"])
        ranked = sorted(alternatives.items(), key=lambda item: -item[1])[:k]
        answer_ids.append(chosen)
        top_ids.append([token for token, _ in ranked])
        top_logprobs.append([value for _, value in ranked])
    rendered_prompt = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
    full = tokenizer.apply_chat_template([*prompt, {"role": "assistant", "content": answer}], tokenize=False)
    # What the template adds after the answer (an end-of-turn marker): trained on, no distribution.
    after_answer = (
        full[len(rendered_prompt) + len(answer) :] if full.startswith(rendered_prompt + answer) else ""
    )
    prompt_ids = tokenizer(rendered_prompt, add_special_tokens=False)["input_ids"]
    suffix_ids = tokenizer(after_answer, add_special_tokens=False)["input_ids"] if after_answer else []
    return TopK(
        input_ids=prompt_ids + answer_ids + suffix_ids,
        prompt_length=len(prompt_ids),
        top_ids=top_ids + [[] for _ in suffix_ids],
        top_logprobs=top_logprobs + [[] for _ in suffix_ids],
    )

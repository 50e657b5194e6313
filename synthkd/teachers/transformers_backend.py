"""Teacher that runs a local transformers model, batching the requests that arrive together."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Sequence
from typing import Any

from synthkd.errors import RecipeError
from synthkd.kd.topk import TopK, teacher_top_k, tokenizer_fingerprint
from synthkd.teachers.base import ChatRequest, Completion, RateLimitHint, ScoreRequest
from synthkd.teachers.config import TeacherConfig
from synthkd.teachers.embedded import resolve_model_source
from synthkd.teachers.param_names import Where, check_params

# Recipe params (OpenAI names where one exists) -> generate() arguments.
_PARAM_NAMES = {
    "max_tokens": "max_new_tokens",
    "max_new_tokens": "max_new_tokens",
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "min_p": "min_p",
    "repetition_penalty": "repetition_penalty",
    "seed": "seed",
}
LOCAL_PARAMS = frozenset(_PARAM_NAMES)
SAMPLING_PARAMS = ("temperature", "top_k", "top_p", "min_p")  # applied by synthkd's own sampler
DEFAULT_MAX_NEW_TOKENS = 256


def check_local_params(params: dict[str, Any], where: Where) -> None:
    check_params(params, where, "transformers", LOCAL_PARAMS)


def generation_setting(params: dict[str, Any], generation_config: Any, name: str, default: Any) -> Any:
    """A generation setting as generate() resolves it: the request's value, else the model's
    generation config (None: the model has none), else transformers' default."""
    if params.get(name) is not None:
        return params[name]
    value = getattr(generation_config, name, None)
    return default if value is None else value


def render_prompt(tokenizer: Any, request: ChatRequest) -> str:
    """The text a local model continues: the chat up to the assistant's turn, or, with
    `continue_final`, up to and including the last message's content, left open."""
    messages = list(request.messages)
    if not request.continue_final:
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    # Render with a sentinel as the last content and cut there: this works for any template,
    # where transformers' own continue_final_message cannot find an empty message.
    sentinel = "\u2063SYNTHKD_CONTINUE\u2063"
    last = messages[-1]
    rendered = tokenizer.apply_chat_template(
        messages[:-1] + [{**last, "content": sentinel}], add_generation_prompt=False, tokenize=False
    )
    return rendered[: rendered.index(sentinel)] + last["content"]


def eos_token_ids(generation_config: Any, tokenizer: Any) -> set[int]:
    """The tokens that end an answer: the generation config's end tokens and the tokenizer's."""
    configured = getattr(generation_config, "eos_token_id", None)
    ids = set(configured if isinstance(configured, list) else [configured] if configured is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


def request_seed(seed: int, request: ChatRequest) -> int:
    """The seed of one request's sampling: (recipe seed, messages, sample index, continue_final)."""
    material = [seed, list(request.messages), request.sample, request.continue_final]
    digest = hashlib.sha256(json.dumps(material, sort_keys=True, ensure_ascii=False).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


class PerRequestSampler:
    """A logits processor that samples each row's next token with that row's own generator.

    Gumbel-max: argmax(logits + Gumbel noise) is a draw from softmax(logits), so greedy decoding
    over the returned scores samples; filtered tokens (-inf) stay impossible. Each row draws one
    noise vector per step from its own generator, so its tokens do not depend on the other rows.
    """

    def __init__(self, seeds: list[int], device: str) -> None:
        import torch

        self._generators = [torch.Generator(device=device).manual_seed(seed) for seed in seeds]

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        noise = torch.stack(
            [
                torch.rand(scores.shape[-1], generator=generator, device=scores.device)
                for generator in self._generators
            ]
        )
        gumbel = -torch.log(-torch.log(noise.clamp_min(torch.finfo(noise.dtype).tiny)))
        return scores.float() + gumbel


def _pick_device(requested: str) -> str:
    import torch

    if requested != "auto":
        return requested
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


class TransformersTeacher:
    backend = "transformers"

    def __init__(self, config: TeacherConfig, seed: int = 0) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        check_local_params(config.params, "teacher.params")
        self.model = config.model
        self.base_url = None
        self._seed = seed
        self._batch_size = config.batch_size
        self._device = _pick_device(config.device)
        source = resolve_model_source(config.model)
        dtype = torch.float32 if self._device == "cpu" else torch.bfloat16
        try:
            self._tokenizer = AutoTokenizer.from_pretrained(source)
            self._model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype).to(self._device)
        except OSError as exc:
            raise RecipeError(
                f"cannot load a transformers model from {config.model!r} (a local folder, a Hub id or "
                f"'embedded'): {exc}",
                where="teacher.model",
            ) from None
        if not self._tokenizer.chat_template:
            raise RecipeError(
                f"the tokenizer of {config.model!r} has no chat template", where="teacher.model"
            )
        self._model.eval()
        self._tokenizer.padding_side = "left"  # decoder-only batches are padded on the left
        if self._tokenizer.pad_token is None:
            self._tokenizer.pad_token = self._tokenizer.eos_token
        self._pending: list[tuple[ChatRequest, asyncio.Future]] = []
        self._batcher: asyncio.Task | None = None
        self._fingerprint: dict[str, str] | None = None
        self.batch_sizes: list[int] = []  # one entry per generate() call, to see batching at work

    async def complete(self, request: ChatRequest) -> tuple[Completion, RateLimitHint | None]:
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self._pending.append((request, future))
        if self._batcher is None or self._batcher.done():
            self._batcher = asyncio.create_task(self._drain())
        return await future, None

    async def _drain(self) -> None:
        """Generate for queued requests, a batch at a time, off the event loop."""
        while self._pending:
            await asyncio.sleep(0)  # let requests that are being scheduled right now join the batch
            first = self._pending[0][0]
            batch = [
                item
                for item in self._pending
                if item[0].params == first.params and item[0].continue_final == first.continue_final
            ][: self._batch_size]
            for item in batch:
                self._pending.remove(item)
            self.batch_sizes.append(len(batch))
            try:
                completions = await asyncio.to_thread(self._generate, [request for request, _ in batch])
            except Exception as exc:  # a generation error fails the batch, not the batcher
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), completion in zip(batch, completions, strict=True):
                if not future.done():
                    future.set_result(completion)

    def _generate(self, requests: list[ChatRequest]) -> list[Completion]:
        import torch

        params = {_PARAM_NAMES[name]: value for name, value in requests[0].params.items()}
        seed = params.pop("seed", self._seed)
        params.setdefault("max_new_tokens", DEFAULT_MAX_NEW_TOKENS)
        sampling = params.get("temperature", 1.0) > 0
        texts = [self.render_prompt(request) for request in requests]
        encoded = self._tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        encoded = encoded.to(self._device)
        # Decoding is greedy as far as generate() knows; when sampling, the last logits processor
        # draws each row's token from that row's own generator (Gumbel-max), seeded by the request
        # alone. An answer so does not depend on the batch it landed in, and a resumed run that
        # batches differently samples the same text.
        seeds = [request_seed(seed, request) for request in requests]
        processors = self._sampling_processors(params, seeds) if sampling else None
        for name in SAMPLING_PARAMS:
            params.pop(name, None)
        with torch.inference_mode():
            output = self._model.generate(
                **encoded,
                **params,
                do_sample=False,
                logits_processor=processors,
                pad_token_id=self._tokenizer.pad_token_id,
            )
        new_tokens = output[:, encoded["input_ids"].shape[1] :]
        eos_ids = self._eos_ids()
        completions = []
        for row, prompt_mask in zip(new_tokens.tolist(), encoded["attention_mask"].tolist(), strict=True):
            end = next((i for i, token in enumerate(row) if token in eos_ids), None)
            generated = row if end is None else row[:end]
            completions.append(
                Completion(
                    text=self._tokenizer.decode(generated, skip_special_tokens=True).strip(),
                    finish_reason="stop" if end is not None else "length",
                    prompt_tokens=int(sum(prompt_mask)),
                    completion_tokens=len(generated),
                )
            )
        return completions

    def _sampling_processors(self, params: dict[str, Any], seeds: list[int]) -> Any:
        """Temperature, top-k, top-p and min-p as generate() would apply them when sampling (the
        request's value, else the model's generation config, else transformers' default), then
        the per-request sampler."""
        from transformers import (
            LogitsProcessorList,
            MinPLogitsWarper,
            TemperatureLogitsWarper,
            TopKLogitsWarper,
            TopPLogitsWarper,
        )

        config = self._model.generation_config
        temperature = generation_setting(params, config, "temperature", 1.0)
        top_k = generation_setting(params, config, "top_k", 50)
        top_p = generation_setting(params, config, "top_p", 1.0)
        min_p = generation_setting(params, config, "min_p", None)
        processors = LogitsProcessorList()
        if temperature > 0 and temperature != 1.0:
            processors.append(TemperatureLogitsWarper(temperature))
        if top_k:
            processors.append(TopKLogitsWarper(top_k=top_k))
        if top_p < 1.0:
            processors.append(TopPLogitsWarper(top_p=top_p))
        if min_p:
            processors.append(MinPLogitsWarper(min_p=min_p))
        processors.append(PerRequestSampler(seeds, self._device))
        return processors

    def render_prompt(self, request: ChatRequest) -> str:
        return render_prompt(self._tokenizer, request)

    def _eos_ids(self) -> set[int]:
        return eos_token_ids(self._model.generation_config, self._tokenizer)

    async def score(self, requests: Sequence[ScoreRequest]) -> list[TopK]:
        """The top-k log-probabilities over each conversation's answer, from forward passes run
        off the event loop, `batch_size` conversations at a time."""
        if not requests:
            return []
        top_k = requests[0].top_k
        if any(request.top_k != top_k for request in requests):
            raise ValueError("one score() call scores with one top_k")
        conversations = [list(request.messages) for request in requests]
        return await asyncio.to_thread(
            teacher_top_k, self._model, self._tokenizer, conversations, top_k, self._batch_size
        )

    def tokenizer_fingerprint(self) -> dict[str, str]:
        # Hashing sorts and serialises the whole vocabulary; the tokenizer never changes after
        # loading, and every score() call and the logits step ask for it, so it is hashed once.
        if self._fingerprint is None:
            self._fingerprint = tokenizer_fingerprint(self._tokenizer)
        return self._fingerprint

    async def aclose(self) -> None:
        if self._batcher is not None:
            self._batcher.cancel()

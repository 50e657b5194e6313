"""Teacher that runs a local model in vLLM's engine, in this process: continuous batching (every
request the dispatcher has in flight joins the running batch as soon as it arrives) and prefix
caching (the system prompt and template shared by a step's requests are computed once).

The `vllm` extra, on a CUDA machine only. What a request means is the transformers backend's:
the same chat template rendering (`continue_final` too), the same token ids (vLLM is given ids,
never text), the same sampling settings resolved from the request and the model's generation
config, the same per-request seed (`request_seed`), and for `score` the same tokenization of
the same conversation, read from vLLM's prompt log-probs at the answer's positions. The pure
mapping lives in functions that do not import vllm, so it is tested on a CPU.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Collection, Sequence
from typing import Any

from synthkd.errors import RecipeError
from synthkd.extras import require
from synthkd.kd.topk import TopK, tokenize_conversation, tokenizer_fingerprint
from synthkd.teachers.base import ChatRequest, Completion, RateLimitHint, ScoreRequest, TeacherError
from synthkd.teachers.config import TeacherConfig
from synthkd.teachers.embedded import resolve_model_source
from synthkd.teachers.param_names import Where, check_params
from synthkd.teachers.transformers_backend import (
    DEFAULT_MAX_NEW_TOKENS,
    LOCAL_PARAMS,
    eos_token_ids,
    generation_setting,
    render_prompt,
    request_seed,
)

BACKEND = "vllm"
PURPOSE = "the vllm backend"
# Recipe params -> SamplingParams fields: the transformers backend's (LOCAL_PARAMS, under the
# same names but max_new_tokens), and what vLLM's sampler honours besides: stop strings and the
# OpenAI penalties, passed as they are.
_PASSED_AS_THEY_ARE = ("stop", "presence_penalty", "frequency_penalty")
_PARAM_NAMES = {name: name for name in (*LOCAL_PARAMS, *_PASSED_AS_THEY_ARE)} | {
    "max_new_tokens": "max_tokens"
}
VLLM_PARAMS = frozenset(_PARAM_NAMES)
# The most log-probs a position may ask for: the logits step's top_k bound. vLLM refuses more
# than the engine's `max_logprobs` (default 20), so the engine is started with this.
MAX_SCORE_TOP_K = 100
# The transformers backend loads a model in bfloat16 on a GPU; so does this one, so that the two
# compute with the same weights (vLLM's "auto" would also pick bfloat16 for the embedded model's
# float32 folder).
DTYPE = "bfloat16"


def check_vllm_params(params: dict[str, Any], where: Where) -> None:
    check_params(params, where, BACKEND, VLLM_PARAMS)


def sampling_kwargs(
    request: ChatRequest, seed: int, generation_config: Any, stop_token_ids: Collection[int]
) -> dict[str, Any]:
    """`SamplingParams` arguments for one request, as the transformers backend would generate it:
    greedy when the request's temperature is 0, else temperature, top-k, top-p and min-p from the
    request, else the model's generation config, else transformers' defaults (top_k 50 among
    them, where vLLM's own default is off); at most DEFAULT_MAX_NEW_TOKENS new tokens; the same
    per-request seed, from (recipe seed or the request's `seed` param, messages, sample index,
    continue_final). `generation_config`: the model's (None: it has none)."""
    params = {_PARAM_NAMES[name]: value for name, value in request.params.items()}
    kwargs: dict[str, Any] = {
        "max_tokens": int(params.get("max_tokens", DEFAULT_MAX_NEW_TOKENS)),
        "seed": request_seed(params.get("seed", seed), request),
        "repetition_penalty": float(generation_setting(params, generation_config, "repetition_penalty", 1.0)),
        "stop_token_ids": sorted(stop_token_ids),
    }
    if params.get("temperature", 1.0) > 0:
        temperature = generation_setting(params, generation_config, "temperature", 1.0)
        # The transformers backend leaves the logits as they are for a temperature that is not > 0.
        kwargs["temperature"] = float(temperature) if temperature > 0 else 1.0
        kwargs["top_k"] = int(generation_setting(params, generation_config, "top_k", 50) or 0)
        kwargs["top_p"] = float(generation_setting(params, generation_config, "top_p", 1.0))
        kwargs["min_p"] = float(generation_setting(params, generation_config, "min_p", None) or 0.0)
    else:
        kwargs["temperature"] = 0.0  # vLLM: greedy
    for name in _PASSED_AS_THEY_ARE:
        if name in params:
            kwargs[name] = params[name]
    return kwargs


def structured_output_kwargs(response_format: dict[str, Any] | None) -> dict[str, Any] | None:
    """`StructuredOutputsParams` arguments for an OpenAI `response_format` (None: free text):
    a JSON schema is enforced while decoding, `json_object` any JSON object."""
    if not response_format or response_format.get("type") == "text":
        return None
    kind = response_format.get("type")
    if kind == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema")
        return {"json": schema} if schema is not None else {"json_object": True}
    if kind == "json_object":
        return {"json_object": True}
    raise TeacherError(
        f"the vllm backend cannot honour response_format type {kind!r} (json_schema, json_object, text)",
        retryable=False,
        reason="invalid_request",
    )


def top_k_from_prompt_logprobs(
    input_ids: Sequence[int], prompt_length: int, prompt_logprobs: Sequence[Any], k: int
) -> TopK:
    """The TopK the transformers backend stores, from vLLM's prompt log-probs of the same ids.

    `prompt_logprobs[p]` (None at 0) maps token id -> Logprob(logprob, rank, decoded_token) for
    the distribution that predicts `input_ids[p]`: the k likeliest tokens (ranks 1..k) and, when
    it is not among them, the token that is there, with its own rank. That token is left out,
    as transformers' top-k has no room for it, and the rest is ordered by rank."""
    top_ids, top_logprobs = [], []
    for position in range(prompt_length, len(input_ids)):
        entries = prompt_logprobs[position]
        if entries is None:
            raise ValueError(f"vLLM returned no log-probs at position {position}")
        items = list(entries.items())
        if len(items) > k:
            items = [(token, logprob) for token, logprob in items if token != input_ids[position]]
        items.sort(key=lambda item: item[1].rank)
        top_ids.append([token for token, _ in items])
        top_logprobs.append([logprob.logprob for _, logprob in items])
    return TopK(
        input_ids=list(input_ids), prompt_length=prompt_length, top_ids=top_ids, top_logprobs=top_logprobs
    )


def finish_reason(reason: str | None) -> str | None:
    """vLLM's finish reasons are OpenAI's ("stop", "length"); an aborted request has none."""
    return None if reason == "abort" else reason


def classify_engine_error(exc: BaseException) -> TeacherError | None:
    """vLLM's errors as the dispatcher's: a dead engine stops the run; a request the engine
    refuses (prompt longer than the model's context, a schema it cannot compile) fails its row; a
    full queue or a failed step is retried. Known by class name, so vllm is not imported here.
    None: not vLLM's, let it pass."""
    names = {cls.__name__ for cls in type(exc).__mro__}
    message = f"vllm: {exc or type(exc).__name__}"
    if "EngineDeadError" in names:
        return TeacherError(message, retryable=False, reason="engine_dead", fatal=True)
    if names & {"RetryableRequestError", "EngineGenerateError", "GracefulHTTPError"}:
        return TeacherError(message, retryable=True, reason="engine_busy")
    if "VLLMClientError" in names:
        return TeacherError(message, retryable=False, reason="invalid_request", fatal=False)
    return None


def require_gpu() -> None:
    """Refuse a CPU-only machine before any model is loaded (preflight says so first)."""
    torch = require("torch", BACKEND, PURPOSE, "teacher.backend")
    if not torch.cuda.is_available():
        raise RecipeError(
            f"the {BACKEND} backend needs a GPU and this machine has none", where="teacher.backend"
        )


class VLLMTeacher:
    backend = BACKEND

    def __init__(self, config: TeacherConfig, seed: int = 0) -> None:
        check_vllm_params(config.params, "teacher.params")
        require("vllm", BACKEND, PURPOSE, "teacher.backend")
        require_gpu()
        from transformers import AutoTokenizer, GenerationConfig
        from vllm import SamplingParams
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams
        from vllm.v1.engine.async_llm import AsyncLLM

        self.model = config.model
        self.base_url = None
        self._seed = seed
        self._SamplingParams, self._StructuredOutputsParams = SamplingParams, StructuredOutputsParams
        self._final_only = RequestOutputKind.FINAL_ONLY
        source = resolve_model_source(config.model)
        try:
            self._tokenizer = AutoTokenizer.from_pretrained(source)
        except OSError as exc:
            raise RecipeError(
                f"cannot load a model from {config.model!r} (a local folder, a Hub id or 'embedded'): {exc}",
                where="teacher.model",
            ) from None
        if not self._tokenizer.chat_template:
            raise RecipeError(
                f"the tokenizer of {config.model!r} has no chat template", where="teacher.model"
            )
        try:
            self._generation_config = GenerationConfig.from_pretrained(source)
        except OSError:  # a model without generation_config.json: transformers' defaults apply
            self._generation_config = None
        self._stop_ids = eos_token_ids(self._generation_config, self._tokenizer)
        self._engine = AsyncLLM.from_engine_args(
            AsyncEngineArgs(
                model=source,
                tokenizer=source,
                dtype=DTYPE,
                seed=seed,
                enable_prefix_caching=True,
                max_logprobs=MAX_SCORE_TOP_K,
                gpu_memory_utilization=config.gpu_memory_utilization,
                disable_log_stats=True,
            )
        )
        self._ids = itertools.count()
        self._fingerprint: dict[str, str] | None = None

    def sampling_params(self, request: ChatRequest) -> Any:
        kwargs = sampling_kwargs(request, self._seed, self._generation_config, self._stop_ids)
        structured = structured_output_kwargs(request.response_format)
        if structured is not None:
            kwargs["structured_outputs"] = self._StructuredOutputsParams(**structured)
        return self._SamplingParams(**kwargs, output_kind=self._final_only)

    async def _generate(self, prompt_ids: list[int], params: Any) -> Any:
        """The engine's final output for one prompt; its errors as TeacherError."""
        final = None
        try:
            async for output in self._engine.generate(
                {"prompt_token_ids": prompt_ids}, params, f"synthkd-{next(self._ids)}"
            ):
                final = output
        except Exception as exc:
            error = classify_engine_error(exc)
            if error is None:
                raise
            raise error from exc
        if final is None:
            raise TeacherError("vllm: the engine returned no output", retryable=True, reason="engine_busy")
        return final

    async def complete(self, request: ChatRequest) -> tuple[Completion, RateLimitHint | None]:
        # Token ids, tokenized as the transformers backend does (no special tokens added to the
        # rendered template): vLLM's own text path would add a BOS token for some tokenizers.
        prompt_ids = self._tokenizer(render_prompt(self._tokenizer, request), add_special_tokens=False)[
            "input_ids"
        ]
        output = (await self._generate(prompt_ids, self.sampling_params(request))).outputs[0]
        tokens = list(output.token_ids)
        ended = output.finish_reason == "stop" and bool(tokens) and tokens[-1] in self._stop_ids
        completion = Completion(
            text=output.text.strip(),
            finish_reason=finish_reason(output.finish_reason),
            prompt_tokens=len(prompt_ids),
            completion_tokens=len(tokens) - ended,  # the end token is not counted, as in transformers
        )
        return completion, None

    async def score(self, requests: Sequence[ScoreRequest]) -> list[TopK]:
        """The top-k log-probabilities over each conversation's answer: one prefill per
        conversation (`prompt_logprobs`, one token generated and dropped), all in the engine at
        once. vLLM reads no prefix cache for a request with prompt log-probs, so every position
        is computed."""
        if not requests:
            return []
        top_k = requests[0].top_k
        if any(request.top_k != top_k for request in requests):
            raise ValueError("one score() call scores with one top_k")
        params = self._SamplingParams(
            max_tokens=1,
            temperature=0.0,
            prompt_logprobs=top_k,
            detokenize=False,
            output_kind=self._final_only,
        )
        encoded = [tokenize_conversation(self._tokenizer, list(request.messages)) for request in requests]
        outputs = await asyncio.gather(*(self._generate(ids, params) for ids, _ in encoded))
        return [
            top_k_from_prompt_logprobs(ids, prompt_length, output.prompt_logprobs, top_k)
            for (ids, prompt_length), output in zip(encoded, outputs, strict=True)
        ]

    def tokenizer_fingerprint(self) -> dict[str, str]:
        if self._fingerprint is None:  # hashing the vocabulary takes a while; it never changes
            self._fingerprint = tokenizer_fingerprint(self._tokenizer)
        return self._fingerprint

    async def aclose(self) -> None:
        engine, self._engine = getattr(self, "_engine", None), None
        if engine is not None:
            engine.shutdown()  # stops the engine process and frees the GPU

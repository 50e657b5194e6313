"""The generation params each kind of teacher takes, and the check that a recipe's params are
among them: a mistyped param (`temprature`) is refused with a did-you-mean before any request,
where it would otherwise be sent as it is and ignored or refused mid-run.

Two kinds of backend. A closed one knows every name it can take: OpenAI's own endpoint (which
answers an unknown argument with HTTP 400), the local backends (which map each name onto their
generate call). Any other name is refused. An open one passes names it does not know on to
servers and providers that each add their own (litellm's provider-specific params, an
OpenAI-compatible server's sampling extensions such as vLLM's `guided_json`): only a name spelled
like a known one, and not itself known, is refused, as a typo; other names go as they are.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

from synthkd.errors import RecipeError
from synthkd.spelling import close_names

# OpenAI's chat completions request body, less model and messages (n and stream are refused
# earlier: synthkd decides them).
OPENAI_CHAT_PARAMS = frozenset(
    {
        "audio",
        "frequency_penalty",
        "function_call",
        "functions",
        "logit_bias",
        "logprobs",
        "max_completion_tokens",
        "max_tokens",
        "metadata",
        "modalities",
        "n",
        "parallel_tool_calls",
        "prediction",
        "presence_penalty",
        "prompt_cache_key",
        "reasoning_effort",
        "response_format",
        "safety_identifier",
        "seed",
        "service_tier",
        "stop",
        "store",
        "stream",
        "stream_options",
        "temperature",
        "tool_choice",
        "tools",
        "top_logprobs",
        "top_p",
        "user",
        "verbosity",
        "web_search_options",
    }
)

# Names other servers and providers take beside OpenAI's (vLLM, Ollama, llama.cpp, TGI; through
# litellm: Anthropic, Gemini, OpenRouter...). Listed so that one spelled like an OpenAI param
# (min_tokens, top_k, typical_p) is not taken for a typo of it.
PROVIDER_PARAMS = frozenset(
    {
        # vLLM's sampling and chat extensions
        "top_k",
        "min_p",
        "repetition_penalty",
        "length_penalty",
        "min_tokens",
        "best_of",
        "use_beam_search",
        "ignore_eos",
        "stop_token_ids",
        "include_stop_str_in_output",
        "skip_special_tokens",
        "spaces_between_special_tokens",
        "truncate_prompt_tokens",
        "allowed_token_ids",
        "bad_words",
        "prompt_logprobs",
        "echo",
        "add_generation_prompt",
        "continue_final_message",
        "add_special_tokens",
        "chat_template",
        "chat_template_kwargs",
        "documents",
        "guided_json",
        "guided_regex",
        "guided_choice",
        "guided_grammar",
        "guided_decoding_backend",
        "guided_whitespace_pattern",
        "structured_outputs",
        "priority",
        "return_tokens_as_token_ids",
        # Ollama and llama.cpp
        "num_ctx",
        "num_predict",
        "n_predict",
        "repeat_penalty",
        "repeat_last_n",
        "penalty_last_n",
        "typical_p",
        "tfs_z",
        "mirostat",
        "mirostat_tau",
        "mirostat_eta",
        "keep_alive",
        "think",
        "options",
        "grammar",
        "json_schema",
        "n_probs",
        "min_keep",
        "cache_prompt",
        "samplers",
        "dynatemp_range",
        "dynatemp_exponent",
        "dry_multiplier",
        "dry_base",
        "dry_allowed_length",
        "xtc_probability",
        "xtc_threshold",
        # TGI
        "top_n_tokens",
        "decoder_input_details",
        # through litellm
        "thinking",
        "reasoning",
        "safety_settings",
        "stop_sequences",
        "max_output_tokens",
        "candidate_count",
        "top_a",
        "extra_headers",
        "extra_body",
        "api_version",
        "provider",
        "transforms",
        "models",
        "route",
        "tool_config",
    }
)

KNOWN_PARAMS = OPENAI_CHAT_PARAMS | PROVIDER_PARAMS  # what an open backend knows

# How alike a name must be to a known one to be taken for its typo by an open backend:
# temprature/temperature 0.95, max_token/max_tokens 0.95, top-p/top_p 0.8.
TYPO_SIMILARITY = 0.8

# Where a refused param is written: the place of every param, or the place of one by its name (a
# param may come from the recipe's teacher while a step's own teacher sets the others).
Where = str | Callable[[str], str]


def check_params(params: dict[str, Any], where: Where, backend: str, valid: Collection[str]) -> None:
    """Refuse the params a closed backend does not take, each with its did-you-mean."""
    unknown = sorted(set(params) - set(valid))
    if unknown:
        named = ", ".join(f"{name}{_did_you_mean(name, valid)}" for name in unknown)
        raise RecipeError(
            f"{named} not supported by the {backend} backend; valid: {', '.join(sorted(valid))}",
            where=_place(where, unknown[0]),
        )


def typos(params: dict[str, Any], known: Collection[str]) -> dict[str, str]:
    """The params an open backend takes for typos: each not known, and spelled like a known one
    (-> that one)."""
    found = {}
    for name in sorted(set(params) - set(known)):
        close = close_names(name, known, cutoff=TYPO_SIMILARITY)
        if close:
            found[name] = close[0]
    return found


def check_typos(params: dict[str, Any], where: Where, backend: str, known: Collection[str]) -> None:
    """Refuse the params an open backend takes for typos of a known one."""
    found = typos(params, known)
    if found:
        named = ", ".join(f"{name} (did you mean {meant}?)" for name, meant in found.items())
        raise RecipeError(
            f"{named}: not a param the {backend} backend knows, and spelled like one that it does; "
            "other names are sent to the server as they are",
            where=_place(where, next(iter(found))),
        )


def _place(where: Where, name: str) -> str:
    return where(name) if callable(where) else where


def _did_you_mean(name: str, valid: Collection[str]) -> str:
    close = close_names(name, valid, cutoff=0.6)
    return f" (did you mean {' or '.join(close)}?)" if close else ""

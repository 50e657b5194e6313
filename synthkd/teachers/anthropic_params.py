"""A chat request as the params of one Anthropic Messages request (an item of a Message Batch),
and what such an item cannot carry.

Plain data and no HTTP, so the registry can ask it before a run (`registry.batch_refusal`) without
importing aiohttp. Online, litellm translates a request and drops what Anthropic lacks; a batch
item is built here, and whatever would change the answer if it were dropped is refused instead.
"""

from __future__ import annotations

from typing import Any

from synthkd.teachers.base import ChatRequest, max_completion_tokens

ANTHROPIC_PREFIX = "anthropic/"  # litellm's name for models served by Anthropic's own API
# Params an Anthropic request carries with the same meaning (`stop` as `stop_sequences`).
CARRIED_PARAMS = frozenset({"max_tokens", "max_completion_tokens", "temperature", "top_p", "top_k", "stop"})
# Why the params Anthropic's batch items cannot carry are refused, where more can be said than
# "no such parameter".
_REFUSED = {
    "tools": "tool use needs the answer translated back, which only litellm's online path does",
    "tool_choice": "tool use needs the answer translated back, which only litellm's online path does",
    "functions": "tool use needs the answer translated back, which only litellm's online path does",
    "function_call": "tool use needs the answer translated back, which only litellm's online path does",
    "parallel_tool_calls": "tool use needs the answer translated back, which only litellm's online path does",
    "logprobs": "Anthropic returns no log-probabilities",
    "top_logprobs": "Anthropic returns no log-probabilities",
    "response_format": "a JSON schema answer is litellm's translation of the online request",
}
MAX_TEMPERATURE = 1.0  # Anthropic's range is 0-1, OpenAI's 0-2
# Roles that become Anthropic's top-level `system` (OpenAI's "developer" is its newer name).
SYSTEM_ROLES = frozenset({"system", "developer"})
# An answer format that asks only for JSON, without a schema, changes nothing litellm sends
# Anthropic online either: the step's prompt asks for JSON and its parser checks the answer.
PLAIN_FORMATS = frozenset({"text", "json_object"})


def is_anthropic_model(model: str) -> bool:
    return model.startswith(ANTHROPIC_PREFIX)


def refused_param(params: dict[str, Any]) -> tuple[str, str] | None:
    """The first of `params` an Anthropic batch item cannot carry faithfully, and why; None if
    it carries them all."""
    for name, value in params.items():
        if name not in CARRIED_PARAMS:
            why = _REFUSED.get(name, "Anthropic's Messages API has no such parameter")
            return name, f"{why}; an item carries only {', '.join(sorted(CARRIED_PARAMS))}"
        if name == "temperature" and isinstance(value, (int, float)) and value > MAX_TEMPERATURE:
            return name, f"Anthropic's temperature runs from 0 to {MAX_TEMPERATURE:g}, not {value}"
    return None


def refused_request(request: ChatRequest) -> str | None:
    """Why one request cannot be an Anthropic batch item as it is (None: it can), in words."""
    refused = refused_param(request.params)
    if refused is not None:
        return f"param {refused[0]!r}: {refused[1]}"
    answer_format = request.response_format
    if answer_format and answer_format.get("type") not in PLAIN_FORMATS:
        return (
            f"a {answer_format.get('type')} response_format (a label step's schema:): Anthropic's "
            "batch items take no answer schema"
        )
    if request.continue_final:
        return "continuing an open last message (magpie) needs a local model"
    for message in request.messages:
        if message.get("role") not in SYSTEM_ROLES | {"user", "assistant"}:
            return f"a message with role {message.get('role')!r}: an item takes user and assistant turns"
        if not isinstance(message.get("content"), str) or set(message) - {"role", "content"}:
            return "a message that is more than a role and a text content"
    return None


def message_params(model: str, request: ChatRequest) -> dict[str, Any]:
    """The `params` of the batch item for `request` (checked by `refused_request` first)."""
    params: dict[str, Any] = {
        "model": model.removeprefix(ANTHROPIC_PREFIX),
        # Anthropic requires max_tokens. Without one in the params, the budget synthkd's cost
        # estimates and spending caps assume for an answer (`base.ASSUMED_MAX_TOKENS`), so a cap
        # holds; litellm's online default is the model's whole output window.
        "max_tokens": max_completion_tokens(request.params),
        "messages": [
            {"role": message["role"], "content": message["content"]}
            for message in request.messages
            if message["role"] not in SYSTEM_ROLES
        ],
    }
    # Anthropic's one system prompt: the system messages as text blocks, empty ones left out
    # (Anthropic refuses an empty block), as litellm sends them online.
    system = [m["content"] for m in request.messages if m["role"] in SYSTEM_ROLES and m["content"]]
    if len(system) == 1:
        params["system"] = system[0]
    elif system:
        params["system"] = [{"type": "text", "text": text} for text in system]
    for name in ("temperature", "top_p", "top_k"):
        if request.params.get(name) is not None:
            params[name] = request.params[name]
    stop = request.params.get("stop")
    if stop:
        params["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    return params

"""The `teacher:` section of a recipe."""

from __future__ import annotations

import re
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from synthkd.config_base import StrictModel
from synthkd.teachers.param_names import KNOWN_PARAMS, typos

EMBEDDED_MODEL = "embedded"
# A smaller model cut from the embedded one, e.g. a student: `embedded:layers=15` keeps 15 of its
# 30 decoder layers (see `teachers.embedded.pruned_embedded_dir`).
PRUNED_EMBEDDED = re.compile(r"embedded:layers=(\d+)")


def embedded_layers(model: str) -> int | None:
    """The layer count `embedded:layers=N` names, or None for any other model name."""
    match = PRUNED_EMBEDDED.fullmatch(model)
    return int(match.group(1)) if match else None


def is_embedded(model: str) -> bool:
    """Whether `model` is the embedded model or a model cut from it (both read its GGUF file)."""
    return model == EMBEDDED_MODEL or embedded_layers(model) is not None


# What a bare model name means where a local model is expected (the default teacher, train.teacher).
DEFAULT_LOCAL_BACKEND = "transformers"


class TokenPrice(StrictModel):
    """A teacher's price in USD per million tokens, for a model litellm's price map does not list."""

    input_per_million: float = Field(ge=0, description="USD per million prompt tokens")
    output_per_million: float = Field(ge=0, description="USD per million completion tokens")


class TeacherConfig(StrictModel):
    """Which model answers, where it lives, and how hard synthkd may push it."""

    backend: Literal["openai", "litellm", "transformers", "vllm"] = Field(
        "openai",
        description="openai: any OpenAI-compatible base_url, posted to directly; litellm: any provider "
        "(anthropic/claude-..., ollama/...; for an OpenAI-compatible server openai/<model> with base_url); "
        "transformers: a local model; vllm: a local model in vLLM's engine, on a GPU. A recipe without "
        "teacher: gets transformers and the embedded model",
    )
    model: str = Field(
        min_length=1,
        description="API model name; for transformers and vllm a local folder, a Hub id or `embedded`",
    )
    base_url: str | None = Field(None, description="any OpenAI-compatible endpoint (vLLM, Ollama, ...)")
    api_key_env: str | None = Field(
        None,
        description="NAME of the environment variable holding the key (openai default: OPENAI_API_KEY); "
        "null for a server that needs none",
    )
    concurrency: int = Field(64, ge=1, description="requests in flight at once")
    rpm: float | None = Field(None, gt=0, description="requests per minute limit")
    tpm: float | None = Field(None, gt=0, description="tokens per minute limit")
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="generation parameters sent as they are (transformers: max_tokens, temperature, top_p, "
        "top_k, min_p, repetition_penalty, seed; vllm: those and stop, presence_penalty, frequency_penalty)",
    )
    timeout: float = Field(120.0, gt=0, description="seconds before one request is abandoned and retried")
    max_attempts: int = Field(6, ge=1, description="attempts per request, the first included")
    outage_seconds: float = Field(
        90.0,
        ge=0,
        description="how long failed connections (server down, restarting) are retried before the run "
        "stops; they do not use up a request's max_attempts",
    )
    batch: bool = Field(
        False,
        description="send the requests as provider batch jobs (half price, answers within 24 hours): "
        "OpenAI's Batch API with the openai backend, Anthropic's Message Batches API with the litellm "
        "backend and an anthropic/ model (params limited to max_tokens, max_completion_tokens, "
        "temperature, top_p, top_k and stop); a killed run resumes by polling the jobs it started",
    )
    batch_poll_seconds: float = Field(
        30.0, gt=0, description="how often batch jobs are asked where they stand"
    )
    batch_queue_wait_seconds: float = Field(
        3600.0,
        ge=0,
        description="how long a full batch queue at the provider (OpenAI's token_limit_exceeded or "
        "request_limit_exceeded) is waited out while none of the run's own jobs is running: a refused "
        "job is started again, from batch_poll_seconds later up to every 10 minutes, without using up "
        "max_attempts; then the run stops, and the same command resumes it",
    )
    max_cost_usd: float | None = Field(
        None,
        gt=0,
        description="stop sending to this teacher before its spend in this run could pass this many USD",
    )
    price: TokenPrice | None = Field(
        None, description="USD per million tokens, where litellm's price map does not know the model"
    )
    # Local (transformers) teachers only.
    device: str = Field("auto", description="transformers: cpu, cuda, cuda:1, mps or auto")
    batch_size: int = Field(8, ge=1, description="transformers: prompts generated together")
    # vllm only.
    gpu_memory_utilization: float = Field(
        0.9,
        gt=0,
        le=1,
        description="vllm: the share of the GPU's memory the engine takes (weights, activations, KV cache)",
    )

    @field_validator("params")
    @classmethod
    def _no_secrets_in_params(cls, params: dict[str, Any]) -> dict[str, Any]:
        # Params go into cache keys, provenance and the manifest as they are: no place for a key.
        found = _secret_like_keys(params)
        if found:
            raise ValueError(
                f"{', '.join(found)} looks like a secret; params are recorded in every output, so keep keys "
                "in an environment variable named by api_key_env"
            )
        return params

    @field_validator("base_url")
    @classmethod
    def _no_credentials_in_url(cls, url: str | None) -> str | None:
        # The SDKs send the key as a bearer token; aiohttp then refuses a URL's user:password, and
        # a secret in the recipe would also travel into logs and manifests.
        if url and urlsplit(url).password is not None:
            raise ValueError(
                "base_url must not contain user:password@; put the secret in an environment variable "
                "and name it in api_key_env"
            )
        return url

    @model_validator(mode="after")
    def _default_key_variable(self) -> TeacherConfig:
        # An OpenAI endpoint needs a key; other backends find provider keys themselves.
        if "api_key_env" not in self.model_fields_set and self.backend == "openai":
            self.api_key_env = "OPENAI_API_KEY"
        return self


def _secret_like_keys(value: Any, prefix: str = "") -> list[str]:
    """Keys (at any depth) named like credentials: api_key, *_token, password, authorization..."""
    found = []
    if isinstance(value, dict):
        for key, inner in value.items():
            name = str(key).lower().replace("-", "_")
            if not prefix and typos({name: inner}, KNOWN_PARAMS):
                pass  # max_token: a typo of max_tokens (the param check says so), not a credential
            elif name.endswith(("_key", "_token", "secret", "password", "credentials")) or name in {
                "key",
                "token",
                "authorization",
                "cookie",
            }:
                found.append(f"params.{prefix}{key}")
            found += _secret_like_keys(inner, f"{prefix}{key}.")
    return found


def default_teacher() -> dict[str, Any]:
    """The teacher of a recipe that names none: SmolLM2-135M-Instruct, shipped in a wheel."""
    return {"backend": DEFAULT_LOCAL_BACKEND, "model": EMBEDDED_MODEL}

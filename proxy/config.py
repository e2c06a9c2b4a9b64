"""memproxy's configuration: one YAML file, loaded once into a typed tree.

This is the only module that reads ``os.environ`` (apart from the offline defaults of
``memcubes.environment``). Loading goes: YAML → ``${VAR}`` / ``${VAR:-default}`` interpolation
(LiteLLM's ``os.environ/VAR`` too) → ``MEMPROXY_<SECTION>__<KEY>`` overrides → validation. Every
problem is collected and reported at once with its path (``memory.retrieval.top_k: ...``), by
``memproxy check-config`` and by ``memproxy serve``, which refuses to start on an invalid file.

Backends use LiteLLM proxy's ``model_list`` shape so its users can move their config over.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from memcubes.config import MemorySettings

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")
_LITELLM_ENV = "os.environ/"
_OVERRIDE_PREFIX = "MEMPROXY_"
# How the names of settings that may hold a secret end (database_url, master_key, api_key,
# extra_headers, a provider's aws_secret_access_key or *_token...): their input is never echoed.
_SECRET_ENDINGS = ("key", "password", "secret", "token", "url", "api_base", "headers", "authorization", "credentials")


class ConfigError(Exception):
    """A configuration that memproxy cannot run with; ``str()`` is the readable report."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source} is invalid:\n" + "\n".join(f"  - {p}" for p in problems))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LiteLLMParams(BaseModel):
    """Passed to litellm as they are (any litellm parameter is accepted), as in LiteLLM proxy."""

    model_config = ConfigDict(extra="allow")

    model: str
    api_base: str | None = None
    api_key: str | None = None
    timeout: float | None = None
    stream_timeout: float | None = None
    max_retries: int | None = None
    extra_headers: dict[str, str] | None = None
    organization: str | None = None


class LocalModelSettings(_Strict):
    """A Hugging Face causal LM served in-process (with activation memory)."""

    path: Path
    device: str = "cpu"
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    max_new_tokens: int = Field(256, ge=1)
    kv_cache_mb: int = Field(1024, ge=0, description="RAM for activation caches; the rest spills to disk")


WIRE_PROVIDERS = frozenset({"openai", "hosted_vllm"})  # relayed over OpenAI's wire by default (forward: auto)


class ModelEntry(_Strict):
    model_name: str
    litellm_params: LiteLLMParams | None = None
    local: LocalModelSettings | None = None
    model_info: dict[str, Any] | None = None
    forward: Literal["auto", "passthrough", "litellm"] = Field(
        "auto",
        description="auto: OpenAI-wire providers (openai/, hosted_vllm/) are relayed byte for byte "
        "over HTTP, every other provider goes through litellm",
    )
    responses_api: Literal["auto", "native", "bridge"] = Field(
        "auto",
        description="how POST /v1/responses reaches this deployment: native relays it to the upstream's own "
        "/v1/responses (OpenAI-wire deployments only); bridge translates it to chat completions; auto is native "
        "for OpenAI's own API (no api_base) and bridge for every other upstream",
    )

    @model_validator(mode="after")
    def _one_backend(self) -> ModelEntry:
        if (self.litellm_params is None) == (self.local is None):
            raise ValueError("give exactly one of litellm_params or local")
        if self.responses_api == "native" and not self.openai_wire:
            raise ValueError(
                "responses_api: native needs a deployment relayed over OpenAI's wire "
                f"(litellm_params.model {'/'.join(sorted(WIRE_PROVIDERS))}/..., or forward: passthrough)"
            )
        return self

    @property
    def openai_wire(self) -> bool:
        """Relayed over HTTP in OpenAI's wire format (rather than through litellm or in-process)."""
        if self.litellm_params is None:
            return False
        provider = self.litellm_params.model.partition("/")[0]
        return self.forward == "passthrough" or (self.forward == "auto" and provider in WIRE_PROVIDERS)


class GeneralSettings(_Strict):
    master_key: str | None = Field(
        None, description="the admin key; when set, every request needs it or a key it created (POST /v1/keys)"
    )
    allow_unauthenticated: bool = Field(
        False,
        description="let `memproxy serve` listen beyond loopback without a master key (anyone reaching it is admin)",
    )
    max_request_size_mb: float = Field(10.0, gt=0)
    max_import_size_mb: float = Field(512.0, gt=0, description="body limit of POST /v1/spaces/import (bundles)")
    max_messages: int = Field(4096, ge=1)
    memory_concurrency_per_key: int = Field(
        4,
        ge=1,
        description="memory work (chat lookups, memory API calls) one key made with POST /v1/keys may have in "
        "flight; past it a chat goes on without memory (degraded) and the memory API answers 429",
    )
    memory_queue_ms: int = Field(
        250, ge=0, description="how long memory work waits for one of its key's slots before that"
    )


class RouterSettings(_Strict):
    """Retries and fallbacks, LiteLLM-style: ``fallbacks: [{gpt-4o: [gpt-4o-mini]}]``."""

    num_retries: int = Field(0, ge=0)
    retry_backoff: float = Field(0.5, ge=0, description="seconds before the first retry; doubles after")
    timeout: float = Field(600.0, gt=0)
    fallbacks: list[dict[str, list[str]]] = Field(default_factory=list)


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value) if value else None


class ServerSettings(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    workers: int = Field(
        1,
        ge=1,
        le=64,
        description="processes serving the port (each uses a core; the vector index must then be a Chroma "
        "server: memory.vector_index.host)",
    )
    keep_alive_seconds: float = Field(
        30.0, gt=0, description="idle keep-alive connections are closed after this; longer than clients' pools reuse"
    )
    # -- operating it: metrics, logs, traces (README "Operating memproxy") --
    metrics: Literal["key", "open", "off"] = Field(
        "key", description="GET /metrics: key = behind the master key (when one is set), open = without it, off = 404"
    )
    log_format: Literal["text", "json"] = Field("text", description="log lines as text or one JSON object each")
    log_user_ids: bool = Field(False, description="put the memory owner's user id in access lines")
    otlp_endpoint: str | None = Field(
        default_factory=lambda: os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or None,
        description="send OpenTelemetry spans here (default: $OTEL_EXPORTER_OTLP_ENDPOINT); unset: no tracing",
    )
    prometheus_multiproc_dir: Path | None = Field(
        default_factory=lambda: _env_path("PROMETHEUS_MULTIPROC_DIR"),
        description="set by $PROMETHEUS_MULTIPROC_DIR (prometheus_client reads it at import): /metrics adds up "
        "every worker process",
    )
    # -- slow clients (proxy.server) --
    header_timeout_seconds: float = Field(
        10.0, gt=0, description="a client that has not sent a request's headers this long after starting is dropped"
    )
    body_timeout_seconds: float = Field(30.0, gt=0, description="longest pause while a request body arrives")
    max_connections: int = Field(
        4096, ge=1, description="open connections; past it the longest-idle (or half-sent) one is closed"
    )


class Settings(_Strict):
    model_list: list[ModelEntry] = Field(default_factory=list)
    general_settings: GeneralSettings = Field(default_factory=GeneralSettings)
    router_settings: RouterSettings = Field(default_factory=RouterSettings)
    litellm_settings: dict[str, Any] = Field(
        default_factory=dict, description="module settings applied to litellm (e.g. drop_params)"
    )
    memory: MemorySettings = Field(default_factory=MemorySettings)
    server: ServerSettings = Field(default_factory=ServerSettings)

    @model_validator(mode="after")
    def _fallbacks_name_models(self) -> Settings:
        names = {entry.model_name for entry in self.model_list}
        for rule in self.router_settings.fallbacks:
            for primary, alternatives in rule.items():
                unknown = [m for m in (primary, *alternatives) if m not in names]
                if unknown:
                    raise ValueError(f"router_settings.fallbacks names unknown models {unknown}")
        model = self.memory.extraction.model
        if self.memory.extraction.mode == "llm" and model is not None and model not in names:
            raise ValueError(f"memory.extraction.model {model!r} is not a model_name of model_list")
        return self

    @classmethod
    def from_yaml(cls, path: Path | str, *, env: Mapping[str, str] | None = None) -> Settings:
        source = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(source, [f"cannot read the file: {exc.strerror or exc}"]) from exc
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(source, [f"not valid YAML: {exc}"]) from exc
        if not isinstance(data, dict):
            raise ConfigError(source, ["the top level must be a mapping of sections"])
        return cls.from_mapping(data, env=env, source=source)

    @classmethod
    def from_mapping(
        cls, data: Mapping[str, Any], *, env: Mapping[str, str] | None = None, source: str = "config"
    ) -> Settings:
        environ = os.environ if env is None else env
        problems: list[str] = []
        resolved = _interpolate(dict(data), environ, "", problems)
        _apply_overrides(resolved, environ)
        try:
            settings = cls.model_validate(resolved)
        except ValidationError as exc:
            problems += [_describe(error) for error in exc.errors()]
        if problems:
            raise ConfigError(source, problems)
        return settings


def _interpolate(value: Any, env: Mapping[str, str], path: str, problems: list[str]) -> Any:
    if isinstance(value, dict):
        return {k: _interpolate(v, env, f"{path}.{k}" if path else str(k), problems) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, env, f"{path}[{i}]", problems) for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value
    if value.startswith(_LITELLM_ENV):
        name = value[len(_LITELLM_ENV) :]
        if name not in env:
            problems.append(f"{path}: environment variable {name} is not set")
        return env.get(name, "")

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in env and (env[name] or default is None):
            return env[name]
        if default is not None:
            return default
        problems.append(f"{path}: environment variable {name} is not set (write ${{{name}:-}} to make it optional)")
        return ""

    replaced = _VAR.sub(substitute, value)
    return None if replaced == "" and _VAR.fullmatch(value) else replaced


def _apply_overrides(data: dict[str, Any], env: Mapping[str, str]) -> None:
    """``MEMPROXY_MEMORY__DATA_DIR=/srv/mem`` sets ``memory.data_dir``; values are parsed as YAML."""
    sections = set(Settings.model_fields)
    for name, raw in env.items():
        if not name.startswith(_OVERRIDE_PREFIX):
            continue
        keys = [part.lower() for part in name[len(_OVERRIDE_PREFIX) :].split("__")]
        if len(keys) < 2 or keys[0] not in sections:
            continue
        node = data
        for key in keys[:-1]:
            child = node.get(key)
            if not isinstance(child, dict):
                child = {}
                node[key] = child
            node = child
        try:
            node[keys[-1]] = yaml.safe_load(raw)
        except yaml.YAMLError:
            node[keys[-1]] = raw


def _describe(error: Any) -> str:
    location = ""
    for part in error["loc"]:
        location += f"[{part}]" if isinstance(part, int) else (f".{part}" if location else str(part))
    if error["type"] == "extra_forbidden":
        key = str(error["loc"][-1])
        parent = _model_at(error["loc"][:-1])
        hint = ""
        if parent is not None:
            close = difflib.get_close_matches(key, list(parent.model_fields), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(parent.model_fields)})"
        return f"{location}: unknown key{hint}"
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] not in ("missing", "value_error") and "input" in error and not _secret(error["loc"]):
        return f"{location}: {message} (got {error['input']!r})"
    return f"{location}: {message}" if location else message


def _secret(location: tuple[Any, ...]) -> bool:
    """Whether a setting at ``location`` may hold a secret (a key, a password, a URL with one in
    it): its input is never quoted back in an error, which may end up in a log."""
    return any(isinstance(part, str) and part.lower().endswith(_SECRET_ENDINGS) for part in location)


def _model_at(location: tuple[Any, ...]) -> type[BaseModel] | None:
    """The settings model at a location path, to suggest the keys it does accept."""
    model: Any = Settings
    for part in location:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part) if isinstance(model, type) and issubclass(model, BaseModel) else None
        if field is None:
            return None
        annotation = field.annotation
        candidates = [annotation, *getattr(annotation, "__args__", ())]
        model = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if model is None:
            for arg in candidates:
                for inner in getattr(arg, "__args__", ()):
                    if isinstance(inner, type) and issubclass(inner, BaseModel):
                        model = inner
            if model is None:
                return None
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def default_config_path() -> Path:
    return Path(os.environ.get("MEMPROXY_CONFIG", "config/default.yaml"))


def client_defaults() -> tuple[str | None, str | None]:
    """``MEMPROXY_URL`` and ``MEMPROXY_API_KEY``: the client commands' ``--url`` and ``--api-key``."""
    return os.environ.get("MEMPROXY_URL") or None, os.environ.get("MEMPROXY_API_KEY") or None

"""Read the TOML configuration once, interpolate ${ENV}, validate it, and hand out typed objects.

One small parser per table; what each table holds is declared once, in the settings dataclass of the module
that owns it (core/sections.py for the relay's own, core/settings.py derives the schemas). `reference()`
lists every key the loader accepts, for the generated configuration reference.
"""
from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from marshmallow import Schema, ValidationError, fields

from formrelay.core.sections import (  # noqa: F401  (the config's types, imported from here by the floors above)
    COMMON_FORM_KEYS,
    LANGUAGE_TAG,
    SLUG,
    CommonFormSchema,
    FormConfig,
    LoggingSchema,
    LoggingSettings,
    MetricsSchema,
    MetricsSettings,
    OSDISchema,
    OSDISettings,
    RelaySchema,
    RelaySettings,
    shipped_language,
)
from formrelay.core.settings import Setting, keys_of, rate_ok, rows  # noqa: F401  (rate_ok: the providers')
from formrelay.core.suggest import did_you_mean
from formrelay.core.webhook_settings import (  # noqa: F401  (WebhookConfig: webhooks.py and destinations.py)
    WEBHOOK_EVENTS,
    WEBHOOK_SECRET_PREFIX,
    WebhookConfig,
    WebhookSchema,
    named,
    request_target,
    webhook_key,
)

# Every config key the relay itself reads, named once (providers name their own keys).
CONFIG_ENV = "FORMRELAY_CONFIG"
# Where the SQLite queue goes when the file sets no [queue] path: the container image points it at its volume,
# so the queue is kept whatever (read-only) directory the config is mounted in.
QUEUE_PATH_ENV = "FORMRELAY_QUEUE_PATH"
DEFAULT_CONFIG_PATH = "formrelay.toml"

ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
# Keys whose values are credentials: masked in logs and never echoed anywhere.
SECRET_KEY_NAME = re.compile(r"(key|token|secret|password|passwd|credential)", re.IGNORECASE)
TABLES = ("relay", "providers", "forms", "queue", "metrics", "logging")
OPTIONAL_TABLES = ("alerts",)  # top-level tables a higher floor registers (formrelay.alerts.settings)


class ConfigError(Exception):
    """The configuration cannot be used; the message says where and why (never a secret value)."""


class ProviderSchemas(Protocol):
    """What the config needs of a provider (its class satisfies this): the schemas of its own keys."""

    needs_settings: bool  # a form of this provider needs a [providers.<name>] table

    def settings_schema(self) -> Schema: ...  # [providers.<name>]

    def form_schema(self) -> Schema: ...  # a [forms.x] table's keys beyond the common ones


# Filled at start-up by the floors above, which this bottom floor never imports: formrelay.providers registers
# every provider's name (its class, and so its schemas, is imported only when a config names it),
# formrelay.delivery.settings the [queue] schema, formrelay.abuse the [forms.x.captcha] schema (EngageOne's class
# carries the [forms.x.followup] schema). formrelay.delivery.relay imports all three; create_app and the CLI
# import the relay before they read a config.
_PROVIDERS: dict[str, Callable[[], ProviderSchemas]] = {}
_SECTIONS: dict[str, type[Schema]] = {}
_REQUIRED_SECTIONS = ("queue", "captcha")


def register_provider(name: str, load: Callable[[], ProviderSchemas]) -> None:
    """Make `provider = "<name>"` and [providers.<name>] known; `load` returns the provider's class."""
    _PROVIDERS[name] = load


def register_section(name: str, schema: type[Schema]) -> None:
    """Give the schema of a table the config reads but a higher floor defines ([queue], [forms.x.captcha], ...)."""
    _SECTIONS[name] = schema


def provider_schemas(name: str) -> ProviderSchemas | None:
    """The registered provider called name (its class), or None."""
    load = _PROVIDERS.get(name)
    return load() if load is not None else None


def _section_schema(name: str) -> Schema:
    return _SECTIONS[name]()


def _check_registered() -> None:
    missing = [f"the [{name}] schema" for name in _REQUIRED_SECTIONS if name not in _SECTIONS]
    missing += [] if _PROVIDERS else ["the providers"]
    if missing:
        # A programming error, not a config error: the start-up registrations this config needs did not happen.
        raise RuntimeError(f"formrelay.core.config: nothing registered {', '.join(missing)}; import "
                           "formrelay.delivery.relay (as create_app and the CLI do) before reading a config")


@dataclass(frozen=True)
class Config:
    """The whole validated configuration."""

    relay: RelaySettings
    providers: Mapping[str, Any]
    forms: Mapping[str, FormConfig]
    secrets: frozenset[str] = frozenset()
    source: str = "<mapping>"
    queue: Any = None
    logging: LoggingSettings = LoggingSettings()
    metrics: MetricsSettings = MetricsSettings()
    alerts: Any = None  # [alerts]: formrelay.alerts.settings registers its schema (the cli and web import it)

    @property
    def shared_storage(self) -> str:
        """The `limits` storage URI for budgets: Redis when configured, else this process's memory."""
        return self.relay.redis_url or "memory://"

    def origins_for(self, form: FormConfig) -> tuple[str, ...]:
        """The CORS allow-list of a form: its own, else the relay's."""
        return form.allowed_origins if form.allowed_origins is not None else self.relay.allowed_origins


def interpolate(value: Any, env: Mapping[str, str], where: str = "") -> Any:
    """Replace ${NAME} in every string with env[NAME]; missing names are one ConfigError naming them all."""
    missing: list[str] = []
    result = _interpolate(value, env, where, missing)
    if missing:
        names = sorted({entry.split(" ", 1)[0] for entry in missing})
        raise ConfigError(f"environment variable{'s' if len(names) > 1 else ''} not set: {', '.join(names)} "
                          f"(used by {'; '.join(entry.split(' ', 1)[1] for entry in missing)})")
    return result


def _interpolate(value: Any, env: Mapping[str, str], where: str, missing: list[str]) -> Any:
    if isinstance(value, str):
        def substitute(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in env:
                missing.append(f"{name} {where or 'config'}")
                return ""
            return env[name]

        return ENV_REFERENCE.sub(substitute, value)
    if isinstance(value, dict):
        return {k: _interpolate(v, env, f"{where}.{k}" if where else k, missing) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, env, f"{where}[{i}]", missing) for i, v in enumerate(value)]
    return value


def collect_secrets(value: Any, key: str = "") -> set[str]:
    """Every string value held under a credential-like key, anywhere in the tree."""
    found: set[str] = set()
    if isinstance(value, str):
        if SECRET_KEY_NAME.search(key) and len(value) >= 4:
            found.add(value)
    elif isinstance(value, dict):
        for k, v in value.items():
            found |= collect_secrets(v, str(k))
    elif isinstance(value, list):
        for v in value:
            found |= collect_secrets(v, key)
    return found


UNKNOWN = "Unknown field."


def _known(schema: Schema | None, extra: frozenset[str] = frozenset()) -> list[str]:
    return sorted(set(keys_of(schema) if schema is not None else ()) | extra)


def _messages(err: ValidationError, where: str, known: list[str] | None = None) -> str:
    """Marshmallow's messages as 'where.key: message'; an unknown key gets the close names, if any."""
    messages = err.messages
    if known and isinstance(messages, dict):
        messages = {k: [f"unknown key{did_you_mean(str(k), known)}" if m == UNKNOWN else m for m in v]
                    if isinstance(v, list) else v for k, v in messages.items()}

    def flatten(prefix: str, messages: Any) -> list[str]:
        if isinstance(messages, dict):
            out: list[str] = []
            for k, v in messages.items():
                out += flatten(f"{prefix}.{k}" if prefix else str(k), v)
            return out
        if isinstance(messages, list):
            return [f"{prefix}: {m}" for m in messages if isinstance(m, str)] or flatten(prefix, messages[0] if messages else "")
        return [f"{prefix}: {messages}"]

    return "; ".join(flatten(where, messages))


def _load(schema: Schema, table: Any, where: str, source: str, known: list[str] | None = None) -> Any:
    """One table through its schema; a ConfigError that says where when it does not fit."""
    try:
        return schema.load(table)
    except ValidationError as err:
        raise ConfigError(f"{source}: {_messages(err, where, known)}") from None


def _top_level(raw: Mapping[str, Any], source: str) -> None:
    known = list(TABLES) + [t for t in OPTIONAL_TABLES if t in _SECTIONS]
    unknown = set(raw) - set(known)
    if unknown:
        raise ConfigError(f"{source}: unknown top-level table(s): "
                          + ", ".join(f"{t}{did_you_mean(t, known)}" for t in sorted(unknown)))


def _section(schema: Schema, data: Mapping[str, Any], name: str, source: str) -> Any:
    """[relay], [queue], [logging], [metrics]: one table, one schema."""
    return _load(schema, data.get(name, {}), name, source, _known(schema))


def _providers(data: Mapping[str, Any], source: str) -> dict[str, Any]:
    """[providers.<name>]: each through its provider's settings schema."""
    providers: dict[str, Any] = {}
    for name, table in (data.get("providers") or {}).items():
        cls = provider_schemas(name)
        if cls is None:
            raise ConfigError(f"{source}: providers.{name}: unknown provider{did_you_mean(name, _PROVIDERS)}")
        schema = cls.settings_schema()
        providers[name] = _load(schema, table or {}, f"providers.{name}", source, _known(schema))
    return providers


def _labels(value: Any) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """`labels`: a string is a field's label in every language; a table is one language's labels."""
    if not isinstance(value, dict):
        raise ValidationError("a table of field = label, or of language = {field = label}")
    flat: dict[str, str] = {}
    by_locale: dict[str, dict[str, str]] = {}
    for key, item in value.items():
        if isinstance(item, str):
            flat[key] = item
        elif isinstance(item, dict) and all(isinstance(v, str) for v in item.values()):
            by_locale[_tag_key(key)] = dict(item)
        else:
            raise ValidationError(f"labels.{key}: a label (string) or a table of field = label")
    return flat, by_locale


def _tag_key(tag: str) -> str:
    """A per-language table's key as it is looked up: lower case, '-' between subtags."""
    if not LANGUAGE_TAG.match(tag):
        raise ValidationError(f"{tag!r} is not a language tag such as 'fr' or 'fr-CA'")
    shipped_language(tag)
    return tag.lower().replace("_", "-")


def _webhooks(raw: tuple[Any, ...], where: str, source: str) -> tuple[WebhookConfig, ...]:
    """[[forms.x.webhooks]]: each entry through its schema, then named (core/webhook_settings.py)."""
    hooks = [_load(WebhookSchema(), table, f"{where}.webhooks[{i}]", source) for i, table in enumerate(raw)]
    try:
        return named(hooks)
    except ValueError as exc:
        i, name = exc.args
        raise ConfigError(f"{source}: {where}.webhooks[{i}].name: {name!r} is used twice") from None


def _form_provider(common: Mapping[str, Any], where: str, providers: dict[str, Any], source: str) -> ProviderSchemas:
    """The form's provider class; a provider without its own table gets its defaults, if it has them all."""
    name = common["provider"]
    cls = provider_schemas(name)
    if cls is None:
        raise ConfigError(f"{source}: {where}.provider: unknown provider {name!r}{did_you_mean(name, _PROVIDERS)}")
    if name not in providers:
        if cls.needs_settings:
            raise ConfigError(f"{source}: {where}: needs a [providers.{name}] table")
        providers[name] = cls.settings_schema().load({})
    return cls


def _followup(common: Mapping[str, Any], where: str, providers: Mapping[str, Any], source: str) -> Any:
    """[forms.x.followup]: EngageOne's schema (its class carries it)."""
    if common.get("followup") is None:
        return None
    if "engageone" not in providers:
        raise ConfigError(f"{source}: {where}.followup: needs a [providers.engageone] table")
    mailer: Any = provider_schemas("engageone")  # loaded above: [providers.engageone] is there
    return _load(mailer.followup_schema(), common["followup"], where + ".followup", source)


def _form(slug: str, table: Any, providers: dict[str, Any], source: str) -> FormConfig:
    """One [forms.<slug>]: the common keys, the provider's own, and the sub-tables."""
    where = f"forms.{slug}"
    if not SLUG.match(slug):
        raise ConfigError(f"{source}: {where}: a slug is lowercase letters, digits, '-' and '_'")
    if not isinstance(table, dict):
        raise ConfigError(f"{source}: {where}: must be a table")
    common = _load(CommonFormSchema(), table, where, source)
    cls = _form_provider(common, where, providers, source)
    own = {k: v for k, v in table.items() if k not in COMMON_FORM_KEYS}
    options = _load(cls.form_schema(), own, where, source, _known(cls.form_schema(), COMMON_FORM_KEYS))
    followup = _followup(common, where, providers, source)
    captcha = None
    if common.get("captcha") is not None:
        captcha = _load(_section_schema("captcha"), common["captcha"], where + ".captcha", source)
    try:
        labels, labels_by_locale = _labels(common["labels"])
        titles = {_tag_key(tag): title for tag, title in common["titles"].items()}
    except ValidationError as err:
        raise ConfigError(f"{source}: {where}: {err.messages[0] if isinstance(err.messages, list) else err.messages}") from None
    return FormConfig(**{**common, "slug": slug, "options": options, "captcha": captcha, "labels": labels,
                         "labels_by_locale": labels_by_locale, "titles": titles,
                         "followup": followup,
                         "webhooks": _webhooks(common["webhooks"], where, source)})


def _also_ok(forms: Mapping[str, FormConfig], source: str) -> None:
    for slug, form in forms.items():
        for other in form.also:
            if other == slug:
                raise ConfigError(f"{source}: forms.{slug}.also: a form cannot name itself")
            if other not in forms:
                raise ConfigError(f"{source}: forms.{slug}.also: there is no form {other!r}")


def _masked(data: Mapping[str, Any], forms: Mapping[str, FormConfig]) -> frozenset[str]:
    """Every value to mask in logs: credentials anywhere, and each webhook URL and key."""
    # A webhook URL may carry a token in its path (chat and automation tools): mask it like any secret.
    # The key part of a whsec_ secret is masked on its own too (collect_secrets has the whole string), and so is
    # the URL's path and query, which an HTTP library's debug line shows without the host.
    hooks = [hook for form in forms.values() for hook in form.webhooks]
    secrets = collect_secrets(data) | {hook.url for hook in hooks}
    secrets |= {hook.secret[len(WEBHOOK_SECRET_PREFIX):] for hook in hooks}
    secrets |= {target for target in (request_target(hook.url) for hook in hooks) if len(target) >= 8}
    return frozenset(secrets)


def parse_config(raw: Mapping[str, Any], env: Mapping[str, str] | None = None, source: str = "<mapping>") -> Config:
    """Validate a decoded TOML document into a Config."""
    _check_registered()
    env = os.environ if env is None else env
    _top_level(raw, source)
    try:
        data = interpolate(dict(raw), env)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    relay = _section(RelaySchema(), data, "relay", source)
    queue = _section(_section_schema("queue"), data, "queue", source)
    logging_settings = _section(LoggingSchema(), data, "logging", source)
    metrics_settings = _section(MetricsSchema(), data, "metrics", source)
    providers = _providers(data, source)
    forms = {slug: _form(slug, table, providers, source) for slug, table in (data.get("forms") or {}).items()}
    _also_ok(forms, source)
    alerts = _section(_section_schema("alerts"), data, "alerts", source) if "alerts" in _SECTIONS else None
    secrets = _masked(data, forms) | getattr(alerts, "secrets", frozenset())
    return Config(relay=relay, providers=providers, forms=forms, secrets=secrets, source=source,
                  queue=queue, logging=logging_settings, metrics=metrics_settings, alerts=alerts)


def load_config(path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Read the TOML file named by path, else $FORMRELAY_CONFIG, else ./formrelay.toml."""
    env = os.environ if env is None else env
    file = Path(path or env.get(CONFIG_ENV) or DEFAULT_CONFIG_PATH)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{file}: no such config file (set {CONFIG_ENV} or pass --config)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{file}: cannot read: {exc.__class__.__name__}") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: not valid TOML: {exc}") from None
    queue = raw.get("queue", {})
    if env.get(QUEUE_PATH_ENV) and isinstance(queue, dict) and "path" not in queue:
        raw = {**raw, "queue": {**queue, "path": env[QUEUE_PATH_ENV]}}
    return parse_config(raw, env, source=str(file))


SLUG_PLACEHOLDER = "<slug>"


def _tables(out: dict[str, list[Setting]], path: str, schema: Schema, provider: str = "") -> None:
    """A table's rows under its path, then each table nested in it (a Nested field, a table of Nested)."""
    out[f"{path} ({provider})" if provider else path] = rows(schema)
    for name, f in schema.fields.items():
        key = f.data_key or name
        if isinstance(f, fields.Nested):
            _tables(out, f"{path}.{key}", f.schema, provider)
        elif isinstance(f, fields.Dict) and isinstance(f.value_field, fields.Nested):
            _tables(out, f"{path}.{key}.<name>", f.value_field.schema, provider)
        elif f.metadata.get("table") is not None:  # a key that is a value or a table (e.g. ENS origin_source)
            _tables(out, f"{path}.{key}", f.metadata["table"](), provider)


def reference() -> dict[str, list[Setting]]:
    """Every table the loader reads, with its keys as (key, type, default, allowed values, meaning).

    Tables are named by their TOML path: "relay", "providers.ens", "forms.<slug>" (the keys every form has),
    "forms.<slug> (ens)" (the keys of a form whose provider is ens), "forms.<slug>.osdi",
    "forms.<slug>.fields.<name> (ens)" (a table of tables), "forms.<slug>.webhooks[]" (an array of tables).
    The generated configuration reference (docs) is built from it; tests/test_config_reference.py checks that
    it and the loader agree key for key.
    """
    _check_registered()
    out: dict[str, list[Setting]] = {}
    for name, schema in (("relay", RelaySchema()), ("queue", _section_schema("queue")), ("logging", LoggingSchema()),
                         ("metrics", MetricsSchema())):
        _tables(out, name, schema)
    for name in OPTIONAL_TABLES:
        if name in _SECTIONS:
            _tables(out, name, _section_schema(name))
    classes = {name: provider_schemas(name) for name in sorted(_PROVIDERS)}
    for name, cls in classes.items():
        if cls is not None:
            _tables(out, f"providers.{name}", cls.settings_schema())
    form = f"forms.{SLUG_PLACEHOLDER}"
    _tables(out, form, CommonFormSchema())
    _tables(out, f"{form}.captcha", _section_schema("captcha"))
    mailer: Any = classes.get("engageone")
    if mailer is not None:
        _tables(out, f"{form}.followup", mailer.followup_schema())
    _tables(out, f"{form}.webhooks[]", WebhookSchema())
    for name, cls in classes.items():
        if cls is not None:
            _tables(out, form, cls.form_schema(), provider=name)
    return out

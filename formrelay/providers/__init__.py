"""The providers formrelay can relay to (transport floor), looked up by the name used in the config.

Lives here: base (HTTP session, timing, shared tokens) and one module per CRM (ngp, ens, actionnetwork,
engageone): its settings and form schemas, its definition -> fields, its payload and its answers. May import:
core, forms, budget, metrics. Never delivery, web or cli, never one provider from another (import-linter's
independence contract), and a provider module never imports this package (it registers them with the config).
"""
from __future__ import annotations

import importlib
from functools import partial
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from formrelay.core import config

if TYPE_CHECKING:
    from formrelay.providers.base import Provider

# name in the config -> "module:Class"; imported on first use so one provider's dependencies
# never burden a relay that doesn't use it.
REGISTRY: dict[str, str] = {
    "ngp": "formrelay.providers.ngp:NGP",
    "ens": "formrelay.providers.ens:ENS",
    "actionnetwork": "formrelay.providers.actionnetwork:ActionNetwork",
    "engageone": "formrelay.providers.engageone:EngageOne",
}

# The provider that sends a form's [forms.x.followup] email (its class carries the followup schema).
FOLLOWUP_SENDER = "engageone"


def provider_class(name: str) -> type[Provider] | None:
    """The Provider class registered under name, or None."""
    target = REGISTRY.get(name)
    if target is None:
        return None
    module, _, attr = target.partition(":")
    cls: type[Provider] = getattr(importlib.import_module(module), attr)
    return cls


def open_providers(relay_config: config.Config, store: Callable[[], Any]) -> dict[str, Provider]:
    """One instance of each configured provider; their session tokens are shared through `store` (the queue
    store, asked when a token is needed): one authenticate for every worker and host sharing it."""
    providers: dict[str, Provider] = {}
    for name, settings in relay_config.providers.items():
        cls = provider_class(name)
        assert cls is not None  # parse_config checked the name
        providers[name] = provider = cls(settings, relay_config.relay)
        for token in provider.shared_tokens():
            token.store = store
    return providers


# Start-up registration: the config (the bottom floor) learns each provider's name from here and asks for its
# class, and so its schemas, only when a config names it.
for _name in REGISTRY:
    config.register_provider(_name, partial(provider_class, _name))  # type: ignore[arg-type]

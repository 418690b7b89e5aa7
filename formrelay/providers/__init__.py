"""The providers formrelay can relay to (transport floor), looked up by the name used in the config.

Lives here: base (HTTP session, timing, shared tokens) and one module per CRM (ngp, ens, actionnetwork,
engageone): its settings and form schemas, its definition -> fields, its payload and its answers. May import:
core, forms, budget, metrics. Never delivery, web or cli, never one provider from another (import-linter's
independence contract), and a provider module never imports this package (it registers them with the config).
"""
from __future__ import annotations

import importlib
from functools import partial
from typing import TYPE_CHECKING

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


def provider_class(name: str) -> type[Provider] | None:
    """The Provider class registered under name, or None."""
    target = REGISTRY.get(name)
    if target is None:
        return None
    module, _, attr = target.partition(":")
    cls: type[Provider] = getattr(importlib.import_module(module), attr)
    return cls


# Start-up registration: the config (the bottom floor) learns each provider's name from here and asks for its
# class, and so its schemas, only when a config names it.
for _name in REGISTRY:
    config.register_provider(_name, partial(provider_class, _name))  # type: ignore[arg-type]

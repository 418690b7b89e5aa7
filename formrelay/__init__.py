"""formrelay: validate supporters' form submissions and relay them to the campaign's CRM.

Packages, from the bottom floor up (each may import only the floors below it; `lint-imports` checks):
core (types, settings, errors, logs) -> forms (fields, schemas, submissions) -> providers, budget,
metrics, abuse (transport and storage) -> delivery (the relay's pipeline and the queue) -> web (routes,
answers, OpenAPI) and cli on top.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from formrelay.core.version import __version__

if TYPE_CHECKING:
    from formrelay.web.app import create_app

__all__ = ["__version__", "create_app"]


def __getattr__(name: str) -> Any:
    # Imported lazily so that importing a low floor (formrelay.core...) does not pull in the web layer.
    if name == "create_app":
        from formrelay.web.app import create_app

        return create_app
    raise AttributeError(name)

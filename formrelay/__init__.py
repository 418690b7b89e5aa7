"""formrelay: validate supporters' form submissions and relay them to the campaign's CRM."""
from __future__ import annotations

from formrelay.app import create_app

__all__ = ["create_app"]
__version__ = "0.1.0"

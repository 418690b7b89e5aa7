"""The release: one number, at the bottom floor so that every floor (OpenAPI, the app) can read it."""
from __future__ import annotations

__version__ = "0.1.0"

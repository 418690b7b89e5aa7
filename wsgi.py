"""WSGI entry point for a checkout of the repository: `gunicorn wsgi:app` (the package has `formrelay.wsgi:app`)."""
from formrelay.wsgi import app, worker

__all__ = ["app", "worker"]

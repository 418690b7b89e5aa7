"""WSGI entry point: `gunicorn wsgi:app` with FORMRELAY_CONFIG naming the TOML file."""
from formrelay import create_app

app = create_app()

"""The WSGI entry point inside the package: `gunicorn formrelay.wsgi:app` works from an installed wheel.

FORMRELAY_CONFIG names the TOML file. Each server process delivers queued submissions too, unless
[queue] embedded_worker = false (then run `formrelay worker` beside it). Don't combine with gunicorn --preload:
threads don't survive fork.
"""
from formrelay.web.app import create_app, start_embedded_worker

app = create_app()
worker = start_embedded_worker(app)

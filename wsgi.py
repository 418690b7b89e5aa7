"""WSGI entry point: `gunicorn wsgi:app` with FORMRELAY_CONFIG naming the TOML file."""
from formrelay import create_app
from formrelay.web.app import start_embedded_worker

app = create_app()
# Each server process delivers queued submissions too, unless [queue] embedded_worker = false
# (then run `formrelay worker` beside it). Don't combine with gunicorn --preload: threads don't survive fork.
worker = start_embedded_worker(app)

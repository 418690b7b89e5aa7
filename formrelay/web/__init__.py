"""The web floor: the Flask app and what it answers over HTTP.

Lives here: app (create_app), routes, responses (negotiated answers), openapi, operations (/healthz, /readyz,
/metrics), cors, demo and templates/. May import: every floor below (delivery, transport, forms, core) and
the sandbox (for the demo); never cli.
"""

"""The web floor: the Flask app, routes, negotiated answers, OpenAPI, operations endpoints, the demo."""

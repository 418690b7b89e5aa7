"""`formrelay demo`: the relay wired to the sandbox providers, plus an example page at /."""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from flask import Blueprint, Flask, Response, render_template

from formrelay.delivery.relay import current_relay
from formrelay.sandbox import ServerThread, create_sandbox

bp = Blueprint("demo", __name__)


def demo_config(sandbox_url: str, queue_path: str | None = None) -> dict[str, Any]:
    """The embedded default config: every form points at the local sandbox."""
    return {
        "relay": {"allowed_origins": ["*"], "rate_limit": "30/minute", "schema_ttl": 300},
        "queue": {"path": queue_path or str(Path(tempfile.mkdtemp(prefix="formrelay-demo-")) / "queue.sqlite3")},
        "providers": {
            "ngp": {"base_url": f"{sandbox_url}/ngp/v2", "api_key": "sandbox-ngp-api-key"},
            "ens": {"base_url": f"{sandbox_url}/ens/service", "api_token": "sandbox-ens-api-token"},
            "actionnetwork": {"base_url": f"{sandbox_url}/actionnetwork/api/v2"},
            "engageone": {
                "users_url": f"{sandbox_url}/engageone/users", "api_url": f"{sandbox_url}/engageone/api",
                "client_id": "sa11bb.sandbox@communicate.engageone.co", "secret": "sandbox-engageone-secret",
                "customer_id": "sa11bb", "pb_customer_id": "eocm-Sandbox-Campaigns",
            },
        },
        "forms": {
            "petition": {
                "provider": "ngp",
                "form_id": "demo-petition",
                "title": "Sign the clean air petition (NGP sandbox)",
            },
            "write-your-mp": {
                "provider": "ens",
                "page_id": 12345,
                "title": "Write to your MP (Engaging Networks sandbox)",
                "fields": {
                    "First Name": {"required": True},
                    "Last Name": {"required": True},
                    "Email Address": {"required": True, "label": "Email"},
                    "Postcode": {"required": True},
                    "Opt-in": {},
                },
                "contact_message": {"subject": "Clean air now", "message": "Dear MP, please act on clean air.",
                                    "editable": True},
                "demo": True,
                "followup": {"campaign": "ThanksForWriting", "communication": "MPFollowUp",
                             "dataset": {"first_name": "First Name"}},
            },
            "toolkit": {
                "provider": "engageone",
                "campaign": "ToolkitDownload",
                "communication": "Toolkit",
                "title": "Get the clean air toolkit (EngageOne sandbox)",
                "sender": "team@example.org",
                "sender_name": "Clean Air Team",
                "fields": {"first_name": {"label": "First name", "required": True},
                           "organisation": {"label": "Organisation"}},
            },
            "clean-air": {
                "provider": "actionnetwork",
                "action": "petition",
                "action_id": "demo-clean-air",
                "title": "Clean air petition (Action Network sandbox)",
                "required": ["given_name", "postal_code"],
                "add_tags": ["clean-air"],
                "email_consent_field": "email_opt_in",
                "sms_opt_in_field": "sms_opt_in",
            },
        },
    }


DEMO_CSP = ("default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self'; img-src 'self'; "
            "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


@bp.get("/")
def index() -> Response:
    relay = current_relay()
    forms = [form.describe() for form in relay.forms.values()]
    response = Response(render_template("demo.html", title="formrelay demo", forms=forms, page_lang="en"), mimetype="text/html")
    # The snippet runs under a strict policy: no inline script or style is needed.
    response.headers["Content-Security-Policy"] = DEMO_CSP
    return response


def create_demo_app() -> tuple[Flask, ServerThread]:
    from formrelay.web.app import create_app

    sandbox = ServerThread(create_sandbox()).start()
    app = create_app(demo_config(sandbox.url))
    app.register_blueprint(bp)
    return app, sandbox

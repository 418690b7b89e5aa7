"""Start-up errors a person can act on: one line that says what is wrong and what to write instead."""
from __future__ import annotations

import socket
import subprocess

import pytest
from click.testing import CliRunner

from formrelay.cli import main
from formrelay.core.config import ConfigError, parse_config
from tests.conftest import free_port
from tests.servers import BIN, ROOT, toml


def config_with(**relay):
    return {"relay": relay, "providers": {"ngp": {"base_url": "http://127.0.0.1:9/v2", "api_key": "k"}},
            "forms": {"join": {"provider": "ngp", "form_id": "1"}}}


def error_of(raw, env=None) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, env or {})
    return str(caught.value)


def test_every_missing_environment_variable_is_named_at_once():
    raw = config_with(secret_key="${FORMRELAY_SECRET_KEY}")
    raw["providers"]["ngp"]["api_key"] = "${NGP_API_KEY}"
    raw["providers"]["actionnetwork"] = {"api_key": "${AN_API_KEY}"}
    message = error_of(raw)
    assert "AN_API_KEY, FORMRELAY_SECRET_KEY, NGP_API_KEY" in message
    assert "providers.ngp.api_key" in message and "relay.secret_key" in message


def test_a_zero_rate_limit_says_how_to_turn_limits_off():
    message = error_of(config_with(rate_limit="0/minute"))
    assert "would refuse every submission" in message and 'set it to ""' in message


def test_a_bad_action_network_rate_is_refused_at_start_up():
    raw = config_with()
    raw["providers"]["actionnetwork"] = {"rate": "4 a second"}
    assert "providers.actionnetwork.rate: '4 a second' is not a rate such as '4/second'" in error_of(raw)


@pytest.mark.parametrize("origin, fix", [("https://www.example.org/", "https://www.example.org"),
                                         ("https://www.example.org/join", "https://www.example.org")])
def test_an_origin_with_a_path_or_trailing_slash_says_what_to_write(origin, fix):
    message = error_of(config_with(allowed_origins=[origin]))
    assert "no path or trailing slash" in message and f"write {fix!r}" in message
    raw = config_with()
    raw["forms"]["join"]["allowed_origins"] = [origin]
    assert "forms.join.allowed_origins" in error_of(raw)


def test_good_origins_pass():
    parse_config(config_with(allowed_origins=["*", "https://www.example.org", "http://127.0.0.1:8080"]), {})


@pytest.mark.e2e
def test_serve_on_a_port_in_use_says_so_in_one_line(tmp_path):
    config = tmp_path / "relay.toml"
    config.write_text(toml(sandbox_url="http://127.0.0.1:9"))
    port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        done = subprocess.run([str(BIN / "formrelay"), "serve", "--config", str(config), "--port", str(port)],
                              cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert f"port {port} on 127.0.0.1 is already in use" in done.stderr
    assert "Traceback" not in done.stderr


def test_serve_reports_a_config_error_without_a_traceback(tmp_path):
    config = tmp_path / "relay.toml"
    config.write_text(toml({"rate_limit": "0/minute"}, "http://127.0.0.1:9"))
    result = CliRunner().invoke(main, ["serve", "--config", str(config), "--port", str(free_port())])
    assert result.exit_code != 0 and "would refuse every submission" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)

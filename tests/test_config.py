"""Config: TOML in, typed objects out, clear errors naming the problem (and never a secret)."""
from __future__ import annotations

import pytest

from formrelay.core.config import ConfigError, interpolate, load_config, parse_config
from tests.conftest import base_config


def test_defaults_and_typed_objects():
    cfg = parse_config(base_config(), env={})
    assert cfg.relay.max_body_bytes == 64 * 1024
    form = cfg.forms["join"]
    assert form.provider == "ngp" and form.options.form_id == "demo-petition"
    assert cfg.origins_for(form) == ("https://www.example.org",)
    assert cfg.shared_storage == "memory://"


def test_form_allowed_origins_replace_the_relays():
    raw = base_config()
    raw["forms"]["join"]["allowed_origins"] = ["https://join.example.org"]
    cfg = parse_config(raw, env={})
    assert cfg.origins_for(cfg.forms["join"]) == ("https://join.example.org",)


def test_env_interpolation_anywhere_in_strings():
    assert interpolate({"a": ["x-${A}-y", {"b": "${B}"}]}, {"A": "1", "B": "2"}) == {"a": ["x-1-y", {"b": "2"}]}


def test_missing_env_variable_stops_startup_naming_it():
    raw = base_config()
    raw["providers"]["ngp"]["api_key"] = "${NGP_API_KEY}"
    with pytest.raises(ConfigError, match="NGP_API_KEY"):
        parse_config(raw, env={})


def test_secrets_are_collected_from_credential_keys_only():
    raw = base_config()
    raw["providers"]["ngp"]["api_key"] = "${NGP_API_KEY}"
    cfg = parse_config(raw, env={"NGP_API_KEY": "s3cr3t-value"})
    assert "s3cr3t-value" in cfg.secrets
    assert "https://ngp.test/v2" not in cfg.secrets


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda r: r["forms"]["join"].update(provider="nope"), "unknown provider"),
        (lambda r: r["forms"]["join"].pop("form_id"), "form_id"),
        (lambda r: r["forms"]["join"].update(colour="red"), "colour"),
        (lambda r: r["forms"].update({"Bad Slug": {"provider": "ngp", "form_id": "1"}}), "slug"),
        (lambda r: r["relay"].update(rate_limit="lots"), "rate limit"),
        (lambda r: r["relay"].update(max_body_bytes=10), "max_body_bytes"),
        (lambda r: r["forms"]["join"].update(success_url="javascript:alert(1)"), "success_url"),
        (lambda r: r.update(extra={}), "extra"),
        (lambda r: r["providers"]["ngp"].update(base_url="not a url"), "base_url"),
    ],
)
def test_bad_config_is_a_config_error_that_says_where(mutate, message):
    raw = base_config()
    mutate(raw)
    with pytest.raises(ConfigError, match=message):
        parse_config(raw, env={})


def test_bad_config_error_never_contains_the_secret():
    raw = base_config()
    raw["providers"]["ngp"]["api_key"] = "${KEY}"
    raw["providers"]["ngp"]["base_url"] = "nope"
    with pytest.raises(ConfigError) as info:
        parse_config(raw, env={"KEY": "topsecret-123"})
    assert "topsecret-123" not in str(info.value)


def test_load_config_reads_toml_from_env_path(tmp_path):
    path = tmp_path / "relay.toml"
    path.write_text('[providers.ngp]\napi_key = "${K}"\n[forms.join]\nprovider = "ngp"\nform_id = 42\n')
    cfg = load_config(env={"FORMRELAY_CONFIG": str(path), "K": "abcd1234"})
    assert cfg.forms["join"].options.form_id == "42"
    assert cfg.providers["ngp"].api_key == "abcd1234"


def test_load_config_errors_are_clear(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "missing.toml", env={})
    bad = tmp_path / "bad.toml"
    bad.write_text("[forms\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad, env={})

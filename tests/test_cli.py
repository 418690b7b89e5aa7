"""The command line: check prints each form's fields; config errors are clear and exit non-zero."""
from __future__ import annotations

from click.testing import CliRunner

from formrelay.cli import main


def write_config(tmp_path, sandbox_url, extra=""):
    path = tmp_path / "formrelay.toml"
    path.write_text(f'''
[providers.ngp]
base_url = "{sandbox_url}/ngp/v2"
api_key = "${{NGP_API_KEY}}"

[forms.join]
provider = "ngp"
form_id = "demo-petition"
{extra}
''')
    return path


def test_check_prints_fields_of_every_form(tmp_path, sandbox):
    path = write_config(tmp_path, sandbox.url)
    result = CliRunner().invoke(main, ["check", "--config", str(path)], env={"NGP_API_KEY": "k-123456"})
    assert result.exit_code == 0, result.output
    assert "[join] provider=ngp" in result.output
    assert "EmailAddress" in result.output and "email" in result.output and "required" in result.output
    assert "k-123456" not in result.output


def test_check_reports_a_missing_env_variable(tmp_path, sandbox):
    path = write_config(tmp_path, sandbox.url)
    result = CliRunner().invoke(main, ["check", "--config", str(path)], env={})
    assert result.exit_code != 0 and "NGP_API_KEY" in result.output


def test_check_reports_a_form_the_provider_does_not_have(tmp_path, sandbox):
    path = write_config(tmp_path, sandbox.url, extra='[forms.other]\nprovider = "ngp"\nform_id = "missing"\n')
    result = CliRunner().invoke(main, ["check", "--config", str(path)], env={"NGP_API_KEY": "k-123456"})
    assert result.exit_code != 0
    assert "[other]" in result.output and "no form missing" in result.output


def test_demo_app_serves_the_example_page_and_a_working_form():
    from formrelay.web.demo import create_demo_app

    app, sandbox = create_demo_app()
    try:
        client = app.test_client()
        page = client.get("/")
        assert page.status_code == 200 and b'action="/v1/forms/petition"' in page.data
        answer = client.post("/v1/forms/petition", json={"FirstName": "Ann", "LastName": "Lee",
                                                         "EmailAddress": "a@example.org", "PostalCode": "20009"})
        assert answer.get_json()["status"] == "delivered"
    finally:
        sandbox.stop()


def to_toml(table, prefix=""):
    """Enough TOML for these configs: nested tables of strings, numbers, booleans and lists of strings."""
    import json

    plain = {k: v for k, v in table.items() if not isinstance(v, dict)}
    lines = [f"[{prefix}]"] if prefix and (plain or not table) else []
    lines += [f'"{k}" = {json.dumps(v)}' for k, v in plain.items()]
    for key, value in table.items():
        if isinstance(value, dict):
            lines.append(to_toml(value, f'{prefix}."{key}"' if prefix else f'"{key}"'))
    return "\n".join(lines)


def check_demo(tmp_path, sandbox, change=lambda config: None):
    from formrelay.web.demo import demo_config

    config = demo_config(sandbox.url, str(tmp_path / "queue.sqlite3"))
    change(config)
    path = tmp_path / "formrelay.toml"
    path.write_text(to_toml(config))
    return CliRunner().invoke(main, ["check", "--config", str(path)])


def test_check_says_which_providers_answer(tmp_path, sandbox):
    result = check_demo(tmp_path, sandbox)
    assert result.exit_code == 0, result.output
    assert result.output.count("provider: answered") == 4
    assert "answered (authenticated)" in result.output  # EngageOne: a token was obtained
    assert "API entry point: HTTP 200" in result.output  # Action Network
    assert "sandbox-ens-api-token" not in result.output and "sandbox-engageone-secret" not in result.output


def test_check_explains_a_refused_ens_token(tmp_path, sandbox):
    result = check_demo(tmp_path, sandbox,
                        lambda c: c["providers"]["ens"].update(api_token="not-the-sandbox-token"))
    assert result.exit_code != 0
    assert "[write-your-mp]" in result.output and "refused" in result.output
    assert "whitelist" in result.output and "data centre" in result.output
    assert "not-the-sandbox-token" not in result.output


def test_check_explains_an_unreachable_provider(tmp_path, sandbox):
    from tests.conftest import free_port

    dead = f"http://127.0.0.1:{free_port()}"  # a loopback port that nothing listens on

    def point_ens_nowhere(config):
        config["providers"]["ens"]["base_url"] = f"{dead}/ens/service"

    result = check_demo(tmp_path, sandbox, point_ens_nowhere)
    assert result.exit_code != 0
    assert f"hint: {dead}/ens/service did not answer" in result.output
    assert "us.engagingnetworks.app" in result.output


def test_check_explains_an_unknown_ens_field(tmp_path, sandbox):
    result = check_demo(tmp_path, sandbox,
                        lambda c: c["forms"]["write-your-mp"]["fields"].update({"Shoe Size": {}}))
    assert result.exit_code != 0
    assert "'Shoe Size'" in result.output and "spelled exactly" in result.output


def test_docs_check_fails_naming_api_key_for_an_ngp_provider_without_one(tmp_path, sandbox):
    """NGP: "You must attach your API key using BasicAuth when making all API calls"; `check` says so at once."""
    path = tmp_path / "formrelay.toml"
    path.write_text(f'[providers.ngp]\nbase_url = "{sandbox.url}/ngp/v2"\n[forms.join]\nprovider = "ngp"\n'
                    'form_id = "demo-petition"\n')
    result = CliRunner().invoke(main, ["check", "--config", str(path)])
    assert result.exit_code != 0 and "providers.ngp.api_key" in result.output

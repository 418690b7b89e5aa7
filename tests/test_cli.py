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
    from formrelay.demo import create_demo_app

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

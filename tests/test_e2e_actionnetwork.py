"""End to end: the relay and the sandbox Action Network on 127.0.0.1, speaking real HTTP."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from formrelay import create_app
from formrelay.sandbox.actionnetwork import API_KEY
from tests.conftest import received

pytestmark = pytest.mark.e2e


def relay_for(sandbox, serve, tmp_path, relay=None, **provider):
    return serve(create_app({
        "relay": {"rate_limit": "", **(relay or {})},
        "providers": {"actionnetwork": {"base_url": f"{sandbox.url}/actionnetwork/api/v2", **provider}},
        "forms": {"sign": {"provider": "actionnetwork", "action": "petition", "action_id": "air",
                           "add_tags": ["air"]}},
        "queue": {"path": str(tmp_path / "q.sqlite3")},
    }))


def test_blind_petition_signature(sandbox, serve, tmp_path):
    relay = relay_for(sandbox, serve, tmp_path)
    answer = requests.post(f"{relay.url}/v1/forms/sign", data={"given_name": "Ann", "email": "ann@example.org"},
                           headers={"Accept": "application/json"}, timeout=5)
    assert answer.json() == {"ok": True, "status": "delivered"}
    (got,) = received(sandbox, "actionnetwork")
    assert got["path"].endswith("/petitions/air/signatures") and got["keyed"] is False
    assert got["body"]["add_tags"] == ["air"]


def test_keyed_signature_sends_the_key_server_side_only(sandbox, serve, tmp_path):
    relay = relay_for(sandbox, serve, tmp_path, api_key=API_KEY)
    answer = requests.post(f"{relay.url}/v1/forms/sign", json={"email": "ann@example.org"}, timeout=5)
    assert answer.status_code == 200 and API_KEY not in answer.text + str(answer.headers)
    assert received(sandbox, "actionnetwork")[0]["keyed"] is True


def test_a_burst_from_many_threads_keeps_to_four_calls_a_second(sandbox, serve, tmp_path):
    # Supporters who may wait (a long answer_within, a slot each): the budget alone spaces the calls.
    relay = relay_for(sandbox, serve, tmp_path, {"answer_within": 30, "provider_concurrency": 10},
                      rate="4/second", budget_wait=10)

    def sign(i: int) -> int:
        return requests.post(f"{relay.url}/v1/forms/sign", json={"email": f"p{i}@example.org"}, timeout=30).status_code

    with ThreadPoolExecutor(10) as pool:
        codes = list(pool.map(sign, range(10)))
    assert codes == [200] * 10
    times = sorted(r["at"] for r in received(sandbox, "actionnetwork"))
    assert len(times) == 10
    # No window of one second holds more than four calls. The sandbox notes when a call arrives, which is when the
    # relay took its slot plus the way there: on a loaded machine (a parallel test run) that way varies by a few
    # hundred ms. A budget letting a fifth call through would show as five arrivals at once (10 threads post
    # together), far below the margin.
    gaps = [round(times[i + 4] - times[i], 3) for i in range(len(times) - 4)]
    assert min(gaps) >= 0.7, gaps


def test_background_request_with_a_key_is_delivered(sandbox, serve, tmp_path):
    """The sandbox answers ?background_request=true with the documented immediate 200 {}, key or not."""
    relay = serve(create_app({
        "relay": {"rate_limit": ""},
        "providers": {"actionnetwork": {"base_url": f"{sandbox.url}/actionnetwork/api/v2", "api_key": API_KEY}},
        "forms": {"sign": {"provider": "actionnetwork", "action": "petition", "action_id": "air", "background": True}},
        "queue": {"path": str(tmp_path / "q.sqlite3")},
    }))
    answer = requests.post(f"{relay.url}/v1/forms/sign", json={"email": "ann@example.org"}, timeout=5)
    assert answer.json() == {"ok": True, "status": "delivered"}
    (got,) = received(sandbox, "actionnetwork")
    assert got["keyed"] is True and got["background"] is True


def test_check_with_a_key_finds_a_wrong_action_id_and_unknown_tags(sandbox, tmp_path):
    """`formrelay check` run for real against the sandbox: a wrong action_id and an unknown tag fail it."""
    from click.testing import CliRunner

    from formrelay.cli import main

    def run(action_id: str, tags: list[str]) -> tuple[int, str]:
        path = tmp_path / "formrelay.toml"
        path.write_text(
            f'[providers.actionnetwork]\nbase_url = "{sandbox.url}/actionnetwork/api/v2"\napi_key = "{API_KEY}"\n'
            f'[queue]\npath = "{tmp_path / "q.sqlite3"}"\n'
            f'[forms.sign]\nprovider = "actionnetwork"\naction = "petition"\naction_id = "{action_id}"\n'
            f'add_tags = {tags!r}\n'.replace("'", '"'))
        result = CliRunner().invoke(main, ["check", "--config", str(path)])
        return result.exit_code, result.output

    code, output = run("air", ["clean-air", "lapsed"])  # "lapsed" is on the sandbox's third page of tags
    assert code == 0, output
    code, output = run("no-such-petition", ["clean-air"])
    assert code != 0 and "no petition 'no-such-petition'" in output
    code, output = run("air", ["clean-air", "typo-tag"])
    assert code != 0 and "'typo-tag' do not exist" in output
    assert API_KEY not in output

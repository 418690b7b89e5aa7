"""The time-trap token: single use, a key shared through the store, and a person never dropped for the relay's
own configuration (a token signed with another key, a page open for days, a store that is down)."""
from __future__ import annotations

import time

import pytest
from itsdangerous import Signer

from formrelay import abuse, create_app
from formrelay.abuse import TimeTrap
from tests.conftest import NGP_FORM_URL, NGP_SUCCESS, base_config

VALID = {"FirstName": "Ann", "LastName": "Lee", "EmailAddress": "ann@example.org", "PostalCode": "20009"}
KEY = "relay-signing-key-0123456789abcdef"


def posts(mocked):
    return [c for c in mocked.calls if c.request.method == "POST" and c.request.url == NGP_FORM_URL]


def test_every_token_is_different_even_within_one_millisecond():
    trap = TimeTrap(KEY, 0, 60)
    now = time.time()
    assert len({trap.issue("join", now=now) for _ in range(50)}) == 50


def test_a_token_from_before_the_upgrade_is_still_good_once(mocked):
    """Pages loaded before the upgrade carry `<slug>.<ms>.<signature>` tokens: still good, and still single-use."""
    mocked.post(NGP_FORM_URL, json=NGP_SUCCESS)
    client = create_app(base_config(secret_key=KEY, time_trap_min=0)).test_client()
    legacy = Signer(KEY, salt="formrelay-started").sign(f"join.{int(time.time() * 1000) - 5000}").decode()
    for _ in range(2):
        assert client.post("/v1/forms/join", json={**VALID, "_started": legacy}).status_code == 200
    assert len(posts(mocked)) == 1


def test_a_token_signed_with_another_key_counts_as_no_token(mocked, caplog):
    mocked.post(NGP_FORM_URL, json=NGP_SUCCESS)
    other = TimeTrap("another-relays-key-0123456789", 0, 60).issue("join", now=time.time() - 5)
    client = create_app(base_config(secret_key=KEY, time_trap_min=0)).test_client()
    assert client.post("/v1/forms/join", json={**VALID, "_started": other}).status_code == 200
    assert len(posts(mocked)) == 1 and "signed with another key" in caplog.text
    # where the form requires a token, the person is asked to reload: never a silent discard
    raw = base_config(secret_key=KEY, time_trap_min=0)
    raw["forms"]["join"]["require_started"] = True
    strict = create_app(raw).test_client()
    answer = strict.post("/v1/forms/join", json={**VALID, "_started": other})
    assert answer.status_code == 422 and "reload" in answer.get_json()["message"]
    page = strict.post("/v1/forms/join", data={**VALID, "_started": other})
    assert page.status_code in (303, 422) and len(posts(mocked)) == 1


def test_a_page_left_open_for_days_is_asked_to_reload_not_dropped(mocked):
    mocked.post(NGP_FORM_URL, json=NGP_SUCCESS)
    app = create_app(base_config(secret_key=KEY, time_trap_min=0, time_trap_max=60))
    old = app.extensions["formrelay"].time_trap.issue("join", now=time.time() - 3600)
    answer = app.test_client().post("/v1/forms/join", json={**VALID, "_started": old})
    assert answer.status_code == 422 and "reload" in answer.get_json()["message"] and posts(mocked) == []


def test_forged_and_foreign_tokens_still_get_a_fake_success(mocked):
    mocked.post(NGP_FORM_URL, json=NGP_SUCCESS)
    app = create_app(base_config(secret_key=KEY, time_trap_min=0))
    trap = app.extensions["formrelay"].time_trap
    client = app.test_client()
    good = trap.issue("join", now=time.time() - 5)
    for token in (good[:-3] + "abc", trap.issue("other", now=time.time() - 5), "join.1.x." + trap.key_id + ".sig"):
        answer = client.post("/v1/forms/join", json={**VALID, "_started": token})
        assert answer.status_code == 200 and answer.get_json()["status"] == "delivered"
    assert posts(mocked) == []


def test_the_key_comes_from_the_store_and_survives_a_store_outage():
    calls = {"n": 0}

    def shared() -> str:
        calls["n"] += 1
        if calls["n"] == 1:
            raise ConnectionError("redis is down")
        return "the-shared-key-0123456789abcdef"

    trap = TimeTrap(None, 0, 60, shared_key=shared)
    stand_in = trap.issue("join", now=time.time() - 1)  # the store is down: a key of this process, for now
    assert trap.check("join", stand_in, False).nonce
    trap._retry_store_at = time.monotonic()  # STORE_RETRY_SECONDS later
    shared_token = trap.issue("join", now=time.time() - 1)  # the store answers again: the shared key from now on
    assert TimeTrap("the-shared-key-0123456789abcdef", 0, 60).check("join", shared_token, True).nonce
    assert trap.check("join", stand_in, True).reason == "time-trap token signed with another key"
    assert not trap.check("join", stand_in, True).fake  # asked to reload, never dropped


def test_without_a_secret_key_every_relay_on_one_store_shares_one_key(tmp_path):
    raw = {**base_config(time_trap_min=0), "queue": {"path": str(tmp_path / "q.sqlite3")}}
    one, two = create_app(raw), create_app(raw)  # two workers of one host
    token = one.extensions["formrelay"].time_trap.issue("join", now=time.time() - 1)
    check = two.extensions["formrelay"].time_trap.check("join", token, True)
    assert check.reason is None and check.nonce


@pytest.mark.parametrize("address, key", [
    ("2001:db8:aa:bb:1:2:3:4", "2001:db8:aa:bb::/64"), ("2001:db8:aa:bb::9", "2001:db8:aa:bb::/64"),
    ("::ffff:198.51.100.7", "198.51.100.7"), ("198.51.100.7", "198.51.100.7"), ("fe80::1%eth0", "fe80::/64"),
    (None, "unknown"), ("not-an-address", "not-an-address"),
])
def test_client_network(address, key):
    assert abuse.client_network(address) == key
    assert abuse.client_network("2001:db8:aa:bb:1:2:3:4", 128) == "2001:db8:aa:bb:1:2:3:4/128"


@pytest.fixture(params=["sqlite", "redis"])
def store(request, tmp_path):
    from formrelay.delivery.stores import SQLiteStore
    from formrelay.delivery.stores.redis import RedisStore

    if request.param == "redis":
        opened = RedisStore(request.getfixturevalue("redis_url"))
    else:
        opened = SQLiteStore(str(tmp_path / "q.sqlite3"))
    yield opened
    opened.close()


def test_store_values_used_once_and_expiring(store):
    """kv_add is the single-use claim of a token's nonce: the first owner wins until the value expires."""
    assert store.kv_add("started:join:n1", "a", ttl=0.3) == "a"
    assert store.kv_add("started:join:n1", "b", ttl=0.3) == "a"
    store.kv_delete("started:join:n1", "b")  # not b's to free
    assert store.kv_get("started:join:n1") == "a"
    store.kv_delete("started:join:n1", "a")
    assert store.kv_add("started:join:n1", "b", ttl=0.3) == "b"
    time.sleep(0.4)
    assert store.kv_get("started:join:n1") is None and store.kv_add("started:join:n1", "c", ttl=5) == "c"
    store.kv_set("answer:join", '{"status": "queued"}', ttl=5)
    assert store.kv_get("answer:join") == '{"status": "queued"}'


def test_while_the_breaker_is_open_a_bot_is_queued_as_a_person_would_be(mocked):
    """Before any person has met the outage, the provider's open breaker says what a person would get now."""
    mocked.post(NGP_FORM_URL, json=NGP_SUCCESS)
    app = create_app(base_config(secret_key=KEY))
    client = app.test_client()
    assert client.post("/v1/forms/join", json=VALID).get_json()["status"] == "delivered"
    breaker = app.extensions["formrelay"].guards["ngp"].breaker
    for _ in range(50):
        if breaker.state == "open":
            break
        breaker.failed("ngp: HTTP 503")
    assert breaker.state == "open"
    bot = client.post("/v1/forms/join", json={**VALID, "_hp": "x"})
    person = client.post("/v1/forms/join", json=VALID)
    assert bot.status_code == person.status_code == 202 and bot.get_json() == person.get_json()
    assert len(posts(mocked)) == 1

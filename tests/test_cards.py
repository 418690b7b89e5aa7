"""The card-number rule (formrelay/forms/cards.py): what it finds, what it leaves alone, and that it is linear."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from formrelay.forms.cards import contains_card_number, luhn_ok

# Test numbers published by the card schemes (they pass Luhn and start like real cards).
CARDS = ["4111111111111111", "5555555555554444", "378282246310005", "6011111111111117", "3530111333300000",
         "2223003122003222", "4000056655665556", "6200000000000005", "2200000000000004"]


@pytest.mark.parametrize("text", [
    "my card 4111111111111111 exp 12/29", "4111.1111.1111.1111", "4111/1111/1111/1111", "4111\u00a01111\u00a01111\u00a01111",
    "4111 1111 1111 1111 12/29 123", "4111-1111-1111-1111", "4111 \u2013 1111 \u2013 1111 \u2013 1111",
    "4111\u200b1111\u200b1111\u200b1111", "\uff14\uff11\uff11\uff11\uff11\uff11\uff11\uff11\uff11\uff11\uff11\uff11\uff11\uff11\uff11\uff11",
    "ref 12 4111 1111 1111 1111", "3782 822463 10005", "4 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1",
    "card:4111111111111111.", "(4111111111111111)", "x4111111111111111y",
])
def test_card_numbers_are_found_however_they_are_written(text):
    assert contains_card_number(text)


@pytest.mark.parametrize("text", [
    "+1 202 555 0123", "+62 812 3456 7890", "+44 20 7946 0958 ext 1234", "0044 20 7946 0958 1234", "0812 3456 7890 1234",
    "1764584027123", "order 4111111111111112", "4111111111111111222233", "2024-01-01/2024-12-31 12:30",
    "19.99 x 1234567 = 24691357.33", "ISBN 978-3-16-148410-0", "call 1-800-555-0199 or 1-800-555-0123",
    "ids 9111111111111111 and 7111111111111111", "", "no digits at all",
])
def test_phone_numbers_dates_and_ids_are_left_alone(text):
    assert not contains_card_number(text)


def test_a_phone_field_is_only_flagged_from_15_digits():
    assert luhn_ok("40000000000002") and contains_card_number("4000 0000 0000 02")  # 14 digits: a card in free text
    assert not contains_card_number("4000 0000 0000 02", phone=True)  # ...but a phone number's length
    assert contains_card_number("4111 1111 1111 1111", phone=True)


separators = st.sampled_from([" ", ".", "/", "-", "\u00a0", "\u2009", "\u2013", "\u200b", "  ", " - ", ""])


@settings(max_examples=300, deadline=None)
@given(card=st.sampled_from(CARDS), cuts=st.lists(st.integers(1, 18), max_size=5), seps=st.lists(separators, min_size=5, max_size=5),
       before=st.text(max_size=20), after=st.text(max_size=20))
def test_any_separators_anywhere_in_any_text(card, cuts, seps, before, after):
    pieces, last = [], 0
    for cut in sorted(set(c for c in cuts if c < len(card))):
        pieces.append(card[last:cut])
        last = cut
    pieces.append(card[last:])
    written = "".join(p + (seps[i % len(seps)] if i < len(pieces) - 1 else "") for i, p in enumerate(pieces))
    assert contains_card_number(f"{before} {written} {after}")  # whatever surrounds it


def test_an_osdi_body_is_scanned_like_a_flat_one(mocked):
    """Card numbers in an OSDI helper body: the person's fields are refused, its referrer_data dropped."""
    from formrelay import create_app
    from tests.conftest import NGP_FORM_URL, NGP_SUCCESS, base_config

    mocked.post(NGP_FORM_URL, json=NGP_SUCCESS)
    client = create_app(base_config()).test_client()
    person = {"given_name": "Ann", "family_name": "Lee", "email_addresses": [{"address": "a@example.org"}],
              "postal_addresses": [{"postal_code": "20009"}]}
    refused = client.post("/v1/forms/join", json={"person": {**person, "family_name": "Lee 4111/1111/1111/1111"}})
    assert refused.status_code == 422 and "Card details" in refused.get_json()["errors"]["LastName"][0]
    comment = client.post("/v1/forms/join", json={"person": person, "comments": "4111.1111.1111.1111 exp 12/29"})
    assert comment.status_code == 422
    dropped = client.post("/v1/forms/join", json={"person": person, "referrer_data": {"source": CARDS[0]},
                                                  "utm_source": f"x {CARDS[1]}"})
    assert dropped.status_code == 200
    sent = [c.request.body for c in mocked.calls if c.request.method == "POST"]
    assert len(sent) == 1 and "1111" not in sent[0] and "4444" not in sent[0]


def test_kilobytes_of_digit_soup_count_as_card_data_so_the_scan_stays_cheap():
    """Past MAX_STEPS candidate spans the scan stops and fails closed: a hostile body cannot make it expensive."""
    from formrelay.forms import cards

    soup = "1. " * (cards.MAX_STEPS // 7 + 10)  # every span starts with 1: no card, but too many spans to try
    assert contains_card_number(soup)
    assert not contains_card_number("1. " * 100)  # a short list of the same is fine
    assert not contains_card_number("7" * 65536)  # one long id is never split

"""Payment card numbers in free text: Luhn-valid runs of 13-19 digits, whatever separates the digits.

The rule (README "Card numbers"): digits are read in groups; groups joined only by separators (any whitespace,
including no-break and zero-width spaces, `.`, `/`, dashes) form a run; any run of whole consecutive groups that
holds 13 to 19 digits is a card number when it passes the Luhn check and starts like a card (issuer
identification: 2200-2204 and 2221-2720, 3, 4, 5, 6, 81-82). So `4111 1111 1111 1111 12/29`,
`4111.1111.1111.1111` and `my card 4111111111111111 exp 12/29` are found. What keeps false positives down:
a run right after `+` is an international phone number; one group of more than 19 digits (a long id) is not
split; numbers starting 0, 1, 7, 9 (national phone numbers, dates, timestamps) are never cards.
The scan is one pass over the text plus at most 19 digit groups per group: linear in the text.
"""
from __future__ import annotations

import unicodedata

MIN_DIGITS, MAX_DIGITS = 13, 19
PHONE_MIN_DIGITS = 15  # E.164 numbers have at most 15 digits, so a phone field is only flagged above that
# Besides whitespace: what people (and bots) put between digit groups.
SEPARATORS = frozenset("./-\u2010\u2011\u2012\u2013\u2014\u2015\u2212\u00b7\u200b\u200c\u200d\u2060\ufeff\u30fb\uff0e\uff0f\uff0d")


def _separator(ch: str) -> bool:
    return ch in SEPARATORS or ch.isspace() or unicodedata.category(ch) == "Zs"


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        n = int(ch)
        if i % 2 == 1:
            n *= 2
            if n > 9:
                n -= 9
        total += n
    return total % 10 == 0


def starts_like_a_card(digits: str) -> bool:
    """The issuer ranges of the card schemes in use (Visa, Mastercard, Amex, Discover, JCB, UnionPay, Maestro,
    Mir, RuPay, Diners): a first digit of 0, 1, 7 or 9 is a phone number, a date or a counter, never a card."""
    first = digits[0]
    if first in "3456":
        return True
    if first == "2":
        head = int(digits[:4])
        return 2200 <= head <= 2204 or 2221 <= head <= 2720
    return digits[:2] in ("81", "82")


def is_card_number(digits: str, min_digits: int = MIN_DIGITS) -> bool:
    return min_digits <= len(digits) <= MAX_DIGITS and starts_like_a_card(digits) and luhn_ok(digits)


def _runs(text: str) -> list[tuple[bool, list[str]]]:
    """(after a plus sign, digit groups) for every run of digit groups joined only by separators."""
    runs: list[tuple[bool, list[str]]] = []
    groups: list[str] = []
    current: list[str] = []
    plus = False
    previous = ""
    for ch in text:
        if ch.isdecimal():
            if not current and not groups:
                plus = previous == "+"
            current.append(str(unicodedata.decimal(ch)))
        elif _separator(ch):
            if current:
                groups.append("".join(current))
                current = []
        else:
            if current:
                groups.append("".join(current))
                current = []
            if groups:
                runs.append((plus, groups))
                groups = []
        previous = ch
    if current:
        groups.append("".join(current))
    if groups:
        runs.append((plus, groups))
    return runs


def contains_card_number(text: str, phone: bool = False) -> bool:
    """True when the text holds a card number by the rule above (phone fields: only from 15 digits)."""
    if sum(ch.isdecimal() for ch in text) < MIN_DIGITS:
        return False  # the common case, decided in one cheap pass
    min_digits = PHONE_MIN_DIGITS if phone else MIN_DIGITS
    for after_plus, groups in _runs(text):
        for start in range(len(groups)):
            if start == 0 and after_plus:
                continue  # +44 ..., +62 ...: an international phone number
            digits = ""
            for group in groups[start:]:
                digits += group
                if len(digits) > MAX_DIGITS:
                    break
                if is_card_number(digits, min_digits):
                    return True
    return False

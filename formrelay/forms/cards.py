"""Payment card numbers in free text: Luhn-valid runs of 13-19 digits, whatever separates the digits.

The rule (docs/guides/security-and-abuse.md, "Card numbers"): digits are read in groups; groups joined only by
separators (any whitespace, including no-break and zero-width spaces, `.`, `/`, dashes) form a run; any run of whole consecutive groups that
holds 13 to 19 digits is a card number when it passes the Luhn check and starts like a card (issuer
identification: 2200-2204 and 2221-2720, 3, 4, 5, 6, 81-82). So `4111 1111 1111 1111 12/29`,
`4111.1111.1111.1111` and `my card 4111111111111111 exp 12/29` are found. What keeps false positives down:
a run right after `+` is an international phone number; one group of more than 19 digits (a long id) is not
split; numbers starting 0, 1, 7, 9 (national phone numbers, dates, timestamps) are never cards.
The scan is linear in the text: at most seven constant-time checks per digit.
"""
from __future__ import annotations

import re
from itertools import accumulate

MIN_DIGITS, MAX_DIGITS = 13, 19
PHONE_MIN_DIGITS = 15  # E.164 numbers have at most 15 digits, so a phone field is only flagged above that
# Besides whitespace: what people (and bots) put between digit groups.
SEPARATORS = frozenset("./-\u2010\u2011\u2012\u2013\u2014\u2015\u2212\u00b7\u200b\u200c\u200d\u2060\ufeff\u30fb\uff0e\uff0f\uff0d")


# A run: a digit, then any separators and a digit, repeated. Nothing follows the repeated group that could fail
# and make the engine try it again, so matching is linear (a trailing stretch of separators is read twice).
RUN = re.compile(r"\d(?:[\s" + re.escape("".join(sorted(SEPARATORS))) + r"]*\d)*")
GROUP = re.compile(r"\d+")


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


def _runs(text: str) -> list[tuple[bool, list[str]]]:
    """(right after a plus sign, digit groups) for every run of digit groups joined only by separators."""
    return [(match.start() > 0 and text[match.start() - 1] == "+", GROUP.findall(match.group()))
            for match in RUN.finditer(text) if match.end() - match.start() >= MIN_DIGITS]


MAX_STEPS = 20_000  # candidate spans tried per text (~10 ms); digit soup beyond that counts as card data


def contains_card_number(text: str, phone: bool = False) -> bool:
    """True when the text holds a card number by the rule above (phone fields: only from 15 digits).

    A run of n digits has at most 7n candidate spans (whole groups, 13-19 digits); those that start like a card
    get a Luhn check. A text that would need more than MAX_STEPS of them (kilobytes of digits split by
    separators, which nobody types into a form) counts as holding a card number (fail closed), so that a
    hostile body cannot make the scan expensive.
    """
    min_digits = PHONE_MIN_DIGITS if phone else MIN_DIGITS
    steps = 0
    for after_plus, groups in _runs(text):
        digits = "".join(groups)
        if len(digits) < min_digits or len(groups) == 1 and len(digits) > MAX_DIGITS:
            continue  # too short, or one long id: never split
        if not digits.isascii():
            digits = "".join(str(int(d)) for d in digits)  # fullwidth and other decimal digits
        starts = set(accumulate((len(g) for g in groups[:-1]), initial=0))
        if after_plus:
            starts.discard(0)  # +44 ..., +62 ...: an international phone number
        for end in accumulate(len(g) for g in groups):
            steps += 1 + MAX_DIGITS - min_digits
            if steps > MAX_STEPS:
                return True
            for length in range(min_digits, min(end, MAX_DIGITS) + 1):
                start = end - length
                if start in starts and starts_like_a_card(digits[start:start + 4]) and luhn_ok(digits[start:end]):
                    return True
    return False

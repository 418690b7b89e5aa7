"""US states, territories, military codes and Canadian provinces, and postal codes checked by the region chosen."""
from __future__ import annotations

import re
from collections.abc import Mapping

from formrelay.core.i18n import Msg, gettext

US_STATES: tuple[tuple[str, str], ...] = (
    ("AL", "Alabama"), ("AK", "Alaska"), ("AZ", "Arizona"), ("AR", "Arkansas"), ("CA", "California"),
    ("CO", "Colorado"), ("CT", "Connecticut"), ("DE", "Delaware"), ("DC", "District of Columbia"),
    ("FL", "Florida"), ("GA", "Georgia"), ("HI", "Hawaii"), ("ID", "Idaho"), ("IL", "Illinois"),
    ("IN", "Indiana"), ("IA", "Iowa"), ("KS", "Kansas"), ("KY", "Kentucky"), ("LA", "Louisiana"),
    ("ME", "Maine"), ("MD", "Maryland"), ("MA", "Massachusetts"), ("MI", "Michigan"), ("MN", "Minnesota"),
    ("MS", "Mississippi"), ("MO", "Missouri"), ("MT", "Montana"), ("NE", "Nebraska"), ("NV", "Nevada"),
    ("NH", "New Hampshire"), ("NJ", "New Jersey"), ("NM", "New Mexico"), ("NY", "New York"),
    ("NC", "North Carolina"), ("ND", "North Dakota"), ("OH", "Ohio"), ("OK", "Oklahoma"), ("OR", "Oregon"),
    ("PA", "Pennsylvania"), ("RI", "Rhode Island"), ("SC", "South Carolina"), ("SD", "South Dakota"),
    ("TN", "Tennessee"), ("TX", "Texas"), ("UT", "Utah"), ("VT", "Vermont"), ("VA", "Virginia"),
    ("WA", "Washington"), ("WV", "West Virginia"), ("WI", "Wisconsin"), ("WY", "Wyoming"),
)
# Territories and freely associated states that the US Postal Service serves with ZIP codes.
US_TERRITORIES: tuple[tuple[str, str], ...] = (
    ("AS", "American Samoa"), ("GU", "Guam"), ("MP", "Northern Mariana Islands"), ("PR", "Puerto Rico"),
    ("VI", "U.S. Virgin Islands"), ("FM", "Federated States of Micronesia"), ("MH", "Marshall Islands"),
    ("PW", "Palau"),
)
US_MILITARY: tuple[tuple[str, str], ...] = (
    ("AA", "Armed Forces Americas"), ("AE", "Armed Forces Europe"), ("AP", "Armed Forces Pacific"),
)
CA_PROVINCES: tuple[tuple[str, str], ...] = (
    ("AB", "Alberta"), ("BC", "British Columbia"), ("MB", "Manitoba"), ("NB", "New Brunswick"),
    ("NL", "Newfoundland and Labrador"), ("NS", "Nova Scotia"), ("NT", "Northwest Territories"),
    ("NU", "Nunavut"), ("ON", "Ontario"), ("PE", "Prince Edward Island"), ("QC", "Quebec"),
    ("SK", "Saskatchewan"), ("YT", "Yukon"),
)
US_CODES = frozenset(code for code, _ in (*US_STATES, *US_TERRITORIES, *US_MILITARY))
CA_CODES = frozenset(code for code, _ in CA_PROVINCES)
US_COUNTRY = frozenset({"US", "USA", "UNITED STATES", "UNITED STATES OF AMERICA"})
CA_COUNTRY = frozenset({"CA", "CAN", "CANADA"})

US_ZIP = re.compile(r"^\d{5}(?:-?\d{4})?$")
# Canada Post: letter digit letter, space, digit letter digit; D, F, I, O, Q, U never appear, W and Z not first.
CA_POSTAL = re.compile(r"^[ABCEGHJ-NPRSTVXY]\d[ABCEGHJ-NPRSTV-Z] ?\d[ABCEGHJ-NPRSTV-Z]\d$", re.IGNORECASE)
OTHER_POSTAL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 -]{1,10}[A-Za-z0-9]$")

US_MESSAGE = Msg("Enter a 5-digit ZIP code (or ZIP+4).")
CA_MESSAGE = Msg("Enter a Canadian postal code such as M5V 2T6.")
OTHER_MESSAGE = Msg("Enter a postal code of 3 to 12 letters or digits.")


def region_of(state: object, country: object) -> str | None:
    """"US", "CA" or None (unknown) from a state/province code and/or a country, the state deciding first."""
    if isinstance(state, str) and state.strip().upper() in US_CODES:
        return "US"
    if isinstance(state, str) and state.strip().upper() in CA_CODES:
        return "CA"
    if isinstance(country, str):
        name = country.strip().upper()
        if name in US_COUNTRY:
            return "US"
        if name in CA_COUNTRY:
            return "CA"
    return None


def postal_code_problem(code: str, state: object = None, country: object = None) -> Msg | None:
    """The message for a postal code that cannot be right for the region chosen, or None (pure).

    US ZIP for US states, territories and military codes; Canada Post's format for provinces; otherwise (another
    country, or no region chosen) only a plausible length and alphabet, since the relay cannot know the format.
    """
    region = region_of(state, country)
    text = code.strip()
    if region == "US":
        return None if US_ZIP.match(text) else US_MESSAGE
    if region == "CA":
        return None if CA_POSTAL.match(text) else CA_MESSAGE
    return None if OTHER_POSTAL.match(text) else OTHER_MESSAGE


def postal_errors(data: Mapping[str, object], rules: Mapping[str, tuple[str | None, str | None]]) -> dict[str, list[str]]:
    """{postal field: [message]} for each postal field whose value does not fit its state/country fields, in the
    language of the answer being written."""
    errors: dict[str, list[str]] = {}
    for postal, (state_field, country_field) in rules.items():
        value = data.get(postal)
        if not isinstance(value, str) or not value.strip():
            continue
        problem = postal_code_problem(value, data.get(state_field) if state_field else None,
                                      data.get(country_field) if country_field else None)
        if problem:
            errors[postal] = [gettext(problem)]
    return errors

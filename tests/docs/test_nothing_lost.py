"""Nothing of the old README was lost when it moved into the site (issue 25).

tests/docs/readme_before_the_site.md is the README as it was before the move (main at 704a42d, the last README
of the old shape; its SHA-256 is pinned below: `git show 704a42d:README.md | sha256sum`). Every piece of it must
still be somewhere in the docs:
each heading as a heading, each table row, each line of each code block, and each sentence of the prose (the
text with links reduced to their words and emphasis and backticks dropped, whitespace collapsed), in docs/,
CHANGELOG.md or the new README. A sentence that had to change when it moved (it said "below", or named a README
section) is listed in REWRITTEN with its new wording, which must then be there instead.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

from tests.docs.conftest import ROOT, fenced, pages

SNAPSHOT = Path(__file__).with_name("readme_before_the_site.md")
SNAPSHOT_SHA256 = "74c28cbc28ac784c6d8a249d8da7fe2a07fdda1bd35cba3256781907a9a8cb4a"

# old sentence (normalised) -> its new wording (normalised): each one reviewed by hand.
REWRITTEN: dict[str, str] = {
    # Links whose words were a path in the repository now name the page they lead to.
    "see docs/wordpress.md.": "see WordPress.",
    "docs/funnel.md.": "The campaign's funnel.",
    "docs/funnel.md).": "The campaign's funnel).",
    "formrelay healthcheck asks a local relay's /readyz and exits 0 or 1, for container and supervisor health checks "
    "(docs/deploy).": "formrelay healthcheck asks a local relay's /readyz and exits 0 or 1, for container and "
                      "supervisor health checks (Health checks).",
    "docs/deploy/.": "Deploy formrelay.",
    "| core/funnel.py | the settings of the funnel: a form's attribution and its [forms.x.thanks] ladder "
    "(docs/funnel.md) |": "| core/funnel.py | the settings of the funnel: a form's attribution and its "
                          "[forms.x.thanks] ladder (The campaign's funnel) |",
    # "below" and "above" pointed into the one README; the page they name is now linked instead.
    'See "Slow, hanging or flooded" below for how a cold start against a CRM that hangs is kept from tying up '
    'threads.': 'See "Slow, hanging or flooded" for how a cold start against a CRM that hangs is kept from tying up '
                'threads.',
    "It is mapped to the form's own fields through the common person model (below), then validated by the form's "
    "schema exactly like a flat body:": "It is mapped to the form's own fields through the common person model, "
                                        "then validated by the form's schema exactly like a flat body:",
    "schema_ttl = 900 # seconds a form definition is cached (see below)":
        "schema_ttl = 900 # seconds a form definition is cached (see Definition caching)",
    '[forms.join-an.person] # only where the automatic mapping guesses wrong ("The common person model")':
        '[forms.join-an.person] # only where the automatic mapping guesses wrong ("The common person model", '
        'guides/person-model.md)',
    # Config examples are loaded by the loader in tests/docs/test_examples.py: an id it takes, not "...".
    'action_id = "5d2c6e0e-..."': 'action_id = "5d2c6e0e-7c44-4c6e-9a3c-2f1e8b0d4a61"',
    # The changelog: "above" meant the README's own sections; Keep a Changelog puts the version in a heading.
    "new metrics (above).": "new metrics (docs/monitoring.md).",
    "0.1.0:": "## [0.1.0] ### Added - First release",
    "first release of the contract's routes, answers, config keys and CLI.":
        "First release of the contract's routes, answers, config keys and CLI.",
    "GET /v1/forms/<slug>/thanks, field keys aliases, multiple, min, max, help, and [relay] keys beyond the "
    "contract's (listed above).": "GET /v1/forms/<slug>/thanks, field keys aliases, multiple, min, max, help, and "
                                  "[relay] keys beyond the contract's (listed in docs/reference/configuration.md).",
    "The English wording of some validation messages changed (Marshmallow's defaults are replaced by the relay's, "
    "above).": "The English wording of some validation messages changed (Marshmallow's defaults are replaced by the "
               "relay's: docs/reference/decisions.md).",
}

LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")


def normalise(text: str) -> str:
    text = LINK.sub(r"\1", text)
    text = text.replace("**", "").replace("`", "")
    return re.sub(r"\s+", " ", text).strip()


def without_code(text: str) -> str:
    return re.sub(r"^```.*?^```[ \t]*$", "", text, flags=re.S | re.M)


def old_units() -> dict[str, list[str]]:
    text = SNAPSHOT.read_text()
    units: dict[str, list[str]] = {"heading": [], "row": [], "code": [], "sentence": []}
    for _, code, _ in fenced(text, *{m for m in re.findall(r"^```(\S*)", text, flags=re.M)}):
        units["code"] += [normalise(line) for line in code.splitlines() if line.strip()]
    prose = without_code(text)
    for block in re.split(r"\n\s*\n", prose):
        block_lines = block.strip().splitlines()
        if not block_lines:
            continue
        if block_lines[0].startswith("#"):
            units["heading"].append(normalise(block_lines[0].lstrip("#")))
            block_lines = block_lines[1:]
        rows = [line for line in block_lines if line.startswith("|")]
        units["row"] += [normalise(row) for row in rows if not re.fullmatch(r"[|\-: ]+", row)]
        rest = "\n".join(line for line in block_lines if not line.startswith("|"))
        # A list item starts a new piece; within one, sentences (split after . ! ? : ;) are the pieces.
        for item in re.split(r"\n(?=- )", rest):
            for sentence in re.split(r"(?<=[.!?:;])\s+", normalise(item.removeprefix("- "))):
                if sentence:
                    units["sentence"].append(sentence)
    return units


def corpus() -> str:
    files = [*pages(), ROOT / "CHANGELOG.md", ROOT / "README.md"]
    return normalise("\n".join(f.read_text() for f in files))


def headings() -> list[str]:
    out = []
    for page in [*pages(), ROOT / "CHANGELOG.md"]:
        out += [normalise(line.lstrip("#")).lower() for line in without_code(page.read_text()).splitlines()
                if line.startswith("#")]
    return out


def test_the_snapshot_is_the_readme_before_the_move():
    assert hashlib.sha256(SNAPSHOT.read_bytes()).hexdigest() == SNAPSHOT_SHA256
    assert len(SNAPSHOT.read_text().splitlines()) == 1767


def test_every_heading_of_the_old_readme_is_a_heading_in_the_docs():
    have = headings()
    missing = [h for h in old_units()["heading"] if not any(h.lower() in mine for mine in have)]
    assert not missing, missing


def test_every_table_row_and_code_line_of_the_old_readme_is_in_the_docs():
    text = corpus()
    units = old_units()
    missing = [u for u in units["row"] + units["code"] if u not in text and REWRITTEN.get(u, "\0") not in text]
    assert not missing, "\n".join(missing)


def lost_sentences(text: str) -> list[str]:
    return [s for s in old_units()["sentence"] if s not in text and REWRITTEN.get(s, "\0") not in text]


def test_every_sentence_of_the_old_readme_is_in_the_docs():
    missing = lost_sentences(corpus())
    assert not missing, "\n".join(missing)


def test_every_rewrite_is_of_a_sentence_that_was_there():
    units = old_units()
    sentences = set(units["sentence"] + units["row"] + units["code"])
    assert not [old for old in REWRITTEN if old not in sentences]


def test_the_check_finds_a_lost_sentence(tmp_path, monkeypatch):
    """The check can fail: with one sentence removed from its page, that sentence is reported."""
    import tests.docs.test_nothing_lost as me

    page = ROOT / "docs" / "operating-the-queue.md"
    sentence = "A job being delivered right now is never retried or dropped (its worker"
    assert sentence in page.read_text()
    copy = tmp_path / "docs"
    copy.mkdir()
    (copy / "operating-the-queue.md").write_text(page.read_text().replace(sentence, "A job"))
    others = [p for p in pages() if p.name != "operating-the-queue.md"]
    monkeypatch.setattr(me, "pages", lambda: [copy / "operating-the-queue.md", *others])
    lost = lost_sentences(me.corpus())
    assert lost and all("never retried or dropped" in s for s in lost), lost

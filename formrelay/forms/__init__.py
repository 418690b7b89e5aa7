"""Pure parts: what a form is and what a supporter sent, as data, with no I/O.

Lives here: fields (FieldSpec -> marshmallow schema -> description), submission (parsing a body, control
fields, the card-number guard), validation (a body and a form's rules -> a Submission or a 422: a pure
function), regions (states, provinces, postal codes by region); person.py is reserved for
the common person model. May import: formrelay.core.
"""

"""The bottom floor: plain types and settings that every other floor reads.

Lives here: errors (the relay's exceptions), outcome (the status words of an answer), config (the typed
settings, and the registry where the floors above register their schemas at start-up), logs (masking, JSON
lines), failure_memory (a failure remembered for a while, doubling up to a cap) and version.
May import: nothing else of formrelay.
"""

"""The bottom floor: plain types, settings, errors and logging; imports nothing else of formrelay."""

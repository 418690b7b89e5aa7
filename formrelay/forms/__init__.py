"""Pure parts: field specs, schemas and the submission as data; imports only formrelay.core."""

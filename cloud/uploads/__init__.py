"""Uploads: items devices send from their outbox (e.g. raw events), each stored once."""

"""Shared infrastructure of the cloud service: settings, database, broker, blobs, errors."""

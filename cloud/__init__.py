"""Tandem cloud: the FastAPI service, organised one folder per feature."""

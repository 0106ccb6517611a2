"""Hookline: verified webhooks in, Prefect flow runs out."""

__version__ = "0.1.0"

"""Moved to pyllamacy.pipeline.text; kept for `pyllamacy.cli`, which still imports it here."""
from .pipeline.text import TextAssembler, normalize_stop  # noqa: F401

__all__ = ["TextAssembler", "normalize_stop"]

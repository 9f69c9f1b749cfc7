"""tunesmith: raw domain records + a base LLM -> a specialised model you can trust and operate."""

__version__ = "0.1.0"

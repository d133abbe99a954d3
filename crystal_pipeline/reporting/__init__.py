"""Reporting: figures and Markdown/HTML helpers that the evaluation and plate reports share."""

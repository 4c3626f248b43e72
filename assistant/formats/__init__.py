"""Readers for each supported file format, and the checks run before any of them."""

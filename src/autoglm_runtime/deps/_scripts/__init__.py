"""Stdlib-only code run inside other interpreters (``python -I probe.py``): no imports from the SDK here."""

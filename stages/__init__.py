"""Thin DVC stage entry points: `python -m stages.<name>` (run as modules so `stages/select.py` cannot shadow the stdlib)."""

"""Thin DVC stage entry points, run as ``python -m stages.<name>``.

Run as modules so that ``stages/select.py`` cannot shadow the stdlib ``select``.
"""

"""Accelerated inference: one model interface over every runtime, and the optimizer that picks one.

Find the runtimes in ``backends/`` (one module each), the method table in
``methods.py``, the search in ``search.py`` and its isolation in ``isolation.py``.
"""

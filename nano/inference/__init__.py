"""Accelerated inference: one model interface over every runtime, and the isolated search.

Find the runtimes (the INT8 builders included) in ``backends/``, one module
each; the method table in ``methods.py``; the search in ``search.py`` and its
isolation in ``isolation.py``. The ``InferenceOptimizer`` facade on top of
this package is ``nano/optimizer.py``.
"""

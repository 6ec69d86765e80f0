"""How ``optimize()`` chooses: the search over the runtimes' methods.

``search_options.py`` (the frozen, validated options of one search), ``inputs.py`` (the data it
reads: calibration and held-out batches, the original's outputs), ``plan.py`` (the order
tried and what is left out as unable to win), ``run.py`` (the loop: each candidate in an
isolated child, the INT8 ladder, the final side-by-side round), ``candidates.py`` (one
candidate built, checked and timed), ``int8_ladder.py``, ``judgement.py`` and
``criterion.py`` (how outputs and metrics are judged), ``measure.py`` (latency and metric
evaluation), ``isolation.py`` (the forked children), ``build_cache.py`` and ``report.py``
(the table, files and chart).

Imports ``nano.runtimes`` and below; imported by ``nano.quantize``, the facade
(``nano.optimizer``) and the CLIs, never by the runtimes.
"""

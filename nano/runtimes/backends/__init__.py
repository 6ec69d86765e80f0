"""One module per runtime, each declaring itself in a frozen ``SPEC`` (``spec.py``).

A backend module builds its kind of model (``build``), names the class that loads
a saved one (``MODEL_CLASS``) and says why it cannot run here
(``unavailable_reason``). Backend modules import the model interface below them
(``nano.runtimes``' types, data and checks), never the registry
(``nano.runtimes.registry``) that lists them, nor anything above.
"""

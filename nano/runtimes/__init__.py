"""The model interface and its runtimes: what ``trace``/``quantize``/``load`` return.

Here lives what a built model *is*: ``AcceleratedModel`` (``model.py``), called like the
original and saved as a checksummed directory (``model_files.py``, ``loading.py``); the
input and output structures (``structure.py``), the data forms users pass (``data.py``,
``calibration.py``); the frozen ``Method`` and ``QuantConfig`` values; the fresh-values
check of every conversion (``verify.py``, ``control_flow.py``, ``embedding_ids.py``); one
module per runtime in ``backends/``, each with its ``SPEC``, and the registry above them
(``registry.py``) from which the method table and accelerator names are read; BigDL-Nano's
argument forms (``bigdl_forms.py``).

Imports only ``nano.errors``, ``nano.noise`` and ``nano.launcher``. Everything above may
import it: the search, quantize, multiprocess, the trainer and the facade; a worker that
only loads saved models needs nothing else.
"""

"""Nano's error classes.

Argument errors are ``ValueError``/``TypeError`` as Python code expects, and also
``RuntimeError``, which BigDL-Nano raised for the same mistakes, so that old
``except RuntimeError`` handlers keep working.
"""


class NanoError(Exception):
    """Base class of every error Nano raises on purpose."""


class NanoValueError(NanoError, ValueError, RuntimeError):
    """An argument has the right type but a value Nano cannot use."""


class NanoTypeError(NanoError, TypeError, RuntimeError):
    """An argument has a type Nano cannot use."""


class NanoIndexError(NanoError, IndexError):
    """An id outside what the model's embedding holds (the original raises IndexError)."""


class DataMismatch(NanoValueError):
    """Data given to Nano (a sample, training, calibration or validation data) does not fit
    the model's inputs."""


class TraceError(NanoError, RuntimeError):
    """A traced or converted model could not be shown to compute what the original does."""


class SearchFailed(NanoError, RuntimeError):
    """optimize() ran, but the original model did not, so nothing can be compared with it;
    ``summary()`` still shows every row and how it ended."""


class MetricError(NanoError, RuntimeError):
    """The user's metric raised while it was evaluated (the cause is chained)."""

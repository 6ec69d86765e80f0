"""Small model definitions Nano ships for demos, tests and benchmarks (plain ``torch.nn``).

On top: may import any package; imported only by the demos, benchmarks and tests.
"""

from nano.models.resnet import resnet18
from nano.models.encoder import TinyEncoder

__all__ = ["TinyEncoder", "resnet18"]

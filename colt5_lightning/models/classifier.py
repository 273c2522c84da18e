"""CoLT5SequenceClassifier: a non-causal routed encoder over token ids, mean-pooled to classes.

token embedding + learned positions -> CoLT5Encoder -> mean over valid tokens -> linear head.
Used for ListOps-style tasks, where sequences are padded and `mask` marks the real tokens.

With num_readout = r > 0 the head classifies each of the last r positions instead of the mean
(logits (b, r, num_classes)): passkey retrieval reads each key digit at its own placeholder.
positions picks the learned position table: "start" indexes it from the first token, "end" from
the last (the readout positions then keep their embeddings whatever the input length, as a
length curriculum needs), "none" drops it (positions come from routing.light_position only).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from .. import _checks
from .config import RoutingConfig
from .encoder import CoLT5Encoder


def masked_mean(x: Tensor, mask: Optional[Tensor]) -> Tensor:
    """Mean of x (b, n, d) over the valid tokens of mask (b, n) -> (b, d)."""
    if mask is None:
        return x.mean(dim=1)
    weights = mask.unsqueeze(-1).to(x.dtype)
    return (x * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)


class CoLT5SequenceClassifier(nn.Module):
    """input_ids (b, n) long, mask (b, n) bool or None -> logits (b, num_classes), or
    (b, num_readout, num_classes) when num_readout > 0."""

    def __init__(self, vocab_size: int, num_classes: int, max_seq_len: int = 2048, dim: int = 256,
                 depth: int = 4, *, routing: Optional[RoutingConfig] = None, dense: bool = False,
                 num_readout: int = 0, positions: str = "start"):
        super().__init__()
        self.vocab_size = _checks.positive_int("vocab_size", vocab_size)
        self.num_classes = _checks.positive_int("num_classes", num_classes)
        self.max_seq_len = _checks.positive_int("max_seq_len", max_seq_len)
        self.num_readout = _checks.non_negative_int("num_readout", num_readout)
        self.tok_emb = nn.Embedding(vocab_size, dim)
        self.positions = _checks.one_of("positions", positions, ("start", "end", "none"))
        self.pos_emb = nn.Parameter(torch.zeros(max_seq_len, dim)) if positions != "none" else None
        self.encoder = CoLT5Encoder(dim, depth, routing=routing, causal=False, dense=dense)
        self.head = nn.Linear(dim, num_classes)
        nn.init.normal_(self.tok_emb.weight, std=0.02)
        if self.pos_emb is not None:
            nn.init.normal_(self.pos_emb, std=0.02)

    def forward(self, input_ids: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        if not isinstance(input_ids, Tensor) or input_ids.ndim != 2 or input_ids.dtype != torch.long:
            raise ValueError("input_ids must be a LongTensor of shape (batch, seq_len), got "
                             f"{getattr(input_ids, 'dtype', type(input_ids).__name__)} "
                             f"{tuple(getattr(input_ids, 'shape', ()))}")
        n = input_ids.shape[1]
        if n > self.max_seq_len:
            raise ValueError(f"input length {n} exceeds max_seq_len {self.max_seq_len}")
        x = self.tok_emb(input_ids)
        if self.positions == "start":
            x = x + self.pos_emb[:n]
        elif self.positions == "end":
            x = x + self.pos_emb[:n].flip(0)  # row 0 is the last token
        x = self.encoder(x, mask)
        if self.num_readout:
            if n < self.num_readout:
                raise ValueError(f"input length {n} is shorter than num_readout {self.num_readout}")
            return self.head(x[:, -self.num_readout:])
        return self.head(masked_mean(x, mask))

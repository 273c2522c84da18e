"""CoLT5LanguageModel: a decoder-only language model built from causally routed blocks.

token embedding + learned absolute positions -> N causal blocks -> LayerNorm -> logits.

Positions are learned absolute embeddings (as in GPT-2 / nanoGPT): the routed layers own their
query/key projections, so rotary embeddings would have to be threaded through every layer,
while an additive table needs nothing from them and suits a model whose context is cropped to
max_seq_len when generating. absolute_positions=False drops the table: positions then come from
causal masking and the light attention (light_position), which suits training on a curriculum of
lengths, where a table's later rows would be untrained at each new length.

Routed token counts are budgets for a max_seq_len-long sequence, turned once into a fixed
number per segment, so a prefix (a prompt while generating) routes exactly as it does inside
the full sequence: logits at t do not depend on the input's length.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import _checks
from .config import RoutingConfig
from .encoder import CoLT5Encoder


class CoLT5LanguageModel(nn.Module):
    """input_ids (b, n) long -> logits (b, n, vocab_size); position t sees only tokens <= t."""

    def __init__(self, vocab_size: int = 256, max_seq_len: int = 1024, dim: int = 256, depth: int = 4, *,
                 routing: Optional[RoutingConfig] = None, tie_embeddings: bool = True, dense: bool = False,
                 absolute_positions: bool = True):
        super().__init__()
        self.vocab_size = _checks.positive_int("vocab_size", vocab_size)
        self.max_seq_len = _checks.positive_int("max_seq_len", max_seq_len)
        self.dense = bool(dense)
        self.tok_emb = nn.Embedding(vocab_size, dim)
        self.pos_emb = nn.Parameter(torch.zeros(max_seq_len, dim)) if absolute_positions else None
        self.encoder = CoLT5Encoder(dim, depth, routing=routing, causal=True, dense=dense, max_seq_len=max_seq_len)
        self.head = nn.Linear(dim, vocab_size, bias=False)
        nn.init.normal_(self.tok_emb.weight, std=0.02)
        if self.pos_emb is not None:
            nn.init.normal_(self.pos_emb, std=0.02)
        if tie_embeddings:
            self.head.weight = self.tok_emb.weight

    def forward(self, input_ids: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        if not isinstance(input_ids, Tensor) or input_ids.ndim != 2 or input_ids.dtype != torch.long:
            raise ValueError("input_ids must be a LongTensor of shape (batch, seq_len), got "
                             f"{getattr(input_ids, 'dtype', type(input_ids).__name__)} "
                             f"{tuple(getattr(input_ids, 'shape', ()))}")
        b, n = input_ids.shape
        if n > self.max_seq_len:
            raise ValueError(f"input length {n} exceeds max_seq_len {self.max_seq_len}")
        x = self.tok_emb(input_ids)
        if self.pos_emb is not None:
            x = x + self.pos_emb[:n]
        x = self.encoder(x, mask)
        return self.head(x)

    @torch.no_grad()
    def generate(self, prompt_ids: Tensor, max_new_tokens: int, temperature: float = 1.0,
                 top_k: Optional[int] = None, generator: Optional[torch.Generator] = None) -> Tensor:
        """Samples max_new_tokens after prompt_ids (b, t) -> (b, t + max_new_tokens).

        The context is cropped to the last max_seq_len tokens. temperature 0 picks the most
        likely token; top_k keeps only the k most likely. Runs in eval mode, restoring the
        previous mode afterwards. `generator` makes sampling reproducible without touching
        the global random state.
        """
        if not isinstance(max_new_tokens, int) or max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be a non-negative int, got {max_new_tokens!r}")
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        if top_k is not None and (not isinstance(top_k, int) or top_k <= 0):
            raise ValueError(f"top_k must be a positive int or None, got {top_k!r}")
        if prompt_ids.ndim != 2 or prompt_ids.shape[1] == 0:
            raise ValueError(f"prompt_ids must have shape (batch, t) with t >= 1, got {tuple(prompt_ids.shape)}")
        was_training = self.training
        self.eval()
        try:
            ids = prompt_ids
            for _ in range(max_new_tokens):
                logits = self(ids[:, -self.max_seq_len:])[:, -1, :].float()
                if temperature == 0:
                    next_id = logits.argmax(-1, keepdim=True)
                else:
                    logits = logits / temperature
                    if top_k is not None:
                        kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
                        logits = logits.masked_fill(logits < kth, float("-inf"))
                    next_id = torch.multinomial(F.softmax(logits, dim=-1), 1, generator=generator)
                ids = torch.cat((ids, next_id), dim=1)
            return ids
        finally:
            self.train(was_training)

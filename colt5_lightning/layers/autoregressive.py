"""ConditionalRoutedAutoregressiveAttention: a causal routed attention.

No output at position t depends on an input after t, including through which tokens are
routed: queries and key/values are both routed by CausalRouter (a threshold from earlier
segments, a running capacity over the sequence), and a routed query sees only routed keys at
or before its own position. Key/values of the first segment are routed by that segment's own
threshold, so they are shown only to queries of later segments (queries of the first segment
are never routed: they have no earlier segment to be judged by). The light branch covers its own and the previous block, causally.
"""
from __future__ import annotations

from typing import Optional

from torch import Tensor

from .. import _checks
from .attention import RoutedAttentionBase
from .local_attention import LocalAttention, light_block_size


ALL_EARLIER = 0  # heavy_window_size: a routed query sees every routed key/value at or before it


class ConditionalRoutedAutoregressiveAttention(RoutedAttentionBase):
    """Takes ConditionalRoutedAttention's arguments. Token counts are budgets for a sequence of
    `max_seq_len` tokens (default: each input's own length). The routers' thresholds are renewed
    every `heavy_segment_size` tokens (default: the light branch's block, light_window_size / 2).
    Give max_seq_len when prefixes of different lengths must route alike, as in generation.

    heavy_window_size (colt5-attention's, default light_window_size): the sequence is cut into
    windows of this many tokens, and a routed query sees only the routed key/values of earlier
    windows; its own window is the light branch's. 0 (ALL_EARLIER, what the models use) lets it see
    every routed key/value at or before its position."""

    def __init__(self, dim: int, *, heavy_segment_size: Optional[int] = None,
                 heavy_window_size: Optional[int] = None, **kwargs):
        window = _checks.positive_int("light_window_size", kwargs.get("light_window_size", 128))
        block = light_block_size(window)
        self.segment_size = block if heavy_segment_size is None else _checks.positive_int(
            "heavy_segment_size", heavy_segment_size)
        if heavy_window_size is None:
            heavy_window_size = window
        elif heavy_window_size != ALL_EARLIER:
            _checks.positive_int("heavy_window_size", heavy_window_size)
        self.heavy_window_size = heavy_window_size
        super().__init__(dim, causal_segment=self.segment_size, **kwargs)
        if self.has_light_attn:
            self.light = LocalAttention(dim, heads=self.light_heads, dim_head=self.light_dim_head,
                                        window_size=self.light_window_size, causal=True,
                                        checkpoint=self.light_checkpoint, position=self.light_position)

    def forward(self, x: Tensor, mask: Optional[Tensor] = None, num_heavy_tokens_q: Optional[int] = None,
                num_heavy_tokens_kv: Optional[int] = None, random_route: bool = False,
                route_input: Optional[Tensor] = None) -> Tensor:
        """random_route: queries and key/values routed by random scores (a negative control).
        route_input: the model's embeddings (b, n, dim), needed with kv_routed_by='embedding'."""
        _checks.features("x", x, self.dim)
        mask = _checks.mask_for("mask", mask, x.shape[:2], "x (batch, seq)")
        k_q, k_kv = self._counts(num_heavy_tokens_q, num_heavy_tokens_kv)
        if not isinstance(k_kv, int):
            raise TypeError("num_heavy_tokens_kv must be an int for causal attention")
        x = self.norm(x)
        out = self._light(x, mask)
        if not self.has_heavy:
            return out
        q_routing = self._route_queries(x, k_q, mask, random_route=random_route)
        kv_routing = self._route_key_values(x, k_kv, mask, route_input, random_route=random_route)
        queries, q_index = self._queries(x, q_routing)  # (b, m_q, dim), (b, m_q)
        kv_position = kv_routing.indices.unsqueeze(1)  # (b, 1, r, m_kv)
        q_position = q_index.view(*q_index.shape, 1, 1)  # (b, m_q, 1, 1)
        first = self.segment_size
        visible = (kv_position <= q_position) & ((kv_position >= first) | (q_position >= first))
        if self.heavy_window_size != ALL_EARLIER:
            visible = visible & (kv_position // self.heavy_window_size < q_position // self.heavy_window_size)
        heavy = self.heavy(queries, kv_routing.tokens, kv_routing.weights, kv_routing.routed_mask,
                           attn_mask=visible, query_weights=self._query_weights(q_routing),
                           positions=(q_index, kv_routing.indices))
        return self._merge(q_routing, heavy, out)

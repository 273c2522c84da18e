"""ConditionalRoutedTransformerBlock: routed attention then routed feed-forward, each residual."""
from __future__ import annotations

from typing import Optional

from torch import Tensor, nn

from .attention import ConditionalRoutedAttention
from .autoregressive import ALL_EARLIER, ConditionalRoutedAutoregressiveAttention
from .feedforward import ConditionalRoutedFeedForward
from .local_attention import light_block_size


class ConditionalRoutedTransformerBlock(nn.Module):
    """x (b, n, dim) -> (b, n, dim). causal=True builds it from the autoregressive attention and a
    causally routed feed-forward, so a stack of such blocks is a decoder that never sees ahead;
    its token counts are budgets for `max_seq_len` tokens (default: each input's own length).
    heavy=False gives the same block without its heavy branches (light attention and light FF
    only: the ablation); light_position (none, rotary, relative) says how the light attention
    sees distances; heavy_queries='all' lets every position read the routed key/values (no query
    router), kv_routed_by='embedding' scores key/values on the model's embeddings (route_input);
    see RoutedAttentionBase. colt5-attention's keywords keep its defaults (see RoutedAttentionBase)."""

    def __init__(self, dim: int, *, num_heavy_attn_tokens_q: int, num_heavy_attn_tokens_kv: int,
                 num_heavy_ff_tokens: int, light_dim_head: int = 64, light_heads: int = 8,
                 light_window_size: int = 128, heavy_dim_head: int = 64, heavy_heads: int = 8,
                 light_ff_mult: float = 0.5, heavy_ff_mult: float = 4, num_routed_kv: int = 1,
                 router_straight_through: bool = True, router_type: str = "coor_descent",
                 router_kwargs: Optional[dict] = None, kv_scaling: Optional[str] = None,
                 multiply_keys_by_score: bool = False, multiply_queries_by_score: bool = False,
                 use_null_q_tokens: bool = True, has_light_attn: bool = True, causal: bool = False,
                 light_checkpoint: bool = False, max_seq_len: Optional[int] = None, heavy: bool = True,
                 light_position: str = "none", heavy_queries: str = "routed",
                 kv_routed_by: str = "hidden", use_triton: bool = False, use_flash_attn: bool = False):
        # use_triton / use_flash_attn: colt5-attention's kernel switches; the fast paths are always taken here
        super().__init__()
        routing = dict(router_straight_through=router_straight_through, router_type=router_type,
                       router_kwargs=router_kwargs)
        attention = ConditionalRoutedAutoregressiveAttention if causal else ConditionalRoutedAttention
        self.causal = causal
        self.attn = attention(dim, num_heavy_tokens_q=num_heavy_attn_tokens_q,
                              num_heavy_tokens_kv=num_heavy_attn_tokens_kv, num_routed_kv=num_routed_kv,
                              light_dim_head=light_dim_head, light_heads=light_heads,
                              light_window_size=light_window_size, heavy_dim_head=heavy_dim_head,
                              heavy_heads=heavy_heads, kv_scaling=kv_scaling,
                              multiply_keys_by_score=multiply_keys_by_score,
                              multiply_queries_by_score=multiply_queries_by_score,
                              use_null_q_tokens=use_null_q_tokens, has_light_attn=has_light_attn,
                              light_checkpoint=light_checkpoint, heavy=heavy, light_position=light_position,
                              heavy_queries=heavy_queries, kv_routed_by=kv_routed_by,
                              **({"max_seq_len": max_seq_len, "heavy_window_size": ALL_EARLIER} if causal else {}),
                              **routing)
        self.ff = ConditionalRoutedFeedForward(dim, num_heavy_tokens=num_heavy_ff_tokens,
                                               light_ff_mult=light_ff_mult, heavy_ff_mult=heavy_ff_mult,
                                               causal=causal, causal_segment_size=light_block_size(light_window_size),
                                               max_seq_len=max_seq_len, heavy=heavy, **routing)

    def forward(self, x: Tensor, mask: Optional[Tensor] = None, num_heavy_attn_tokens_q=None,
                num_heavy_attn_tokens_kv=None, num_heavy_ff_tokens=None, route_input: Optional[Tensor] = None) -> Tensor:
        """route_input: the model's embeddings, for key/value routers built with kv_routed_by='embedding'."""
        x = x + self.attn(x, mask=mask, num_heavy_tokens_q=num_heavy_attn_tokens_q,
                          num_heavy_tokens_kv=num_heavy_attn_tokens_kv, route_input=route_input)
        return x + self.ff(x, mask=mask, num_heavy_tokens=num_heavy_ff_tokens)

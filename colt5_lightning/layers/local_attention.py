"""Light-branch attention: blocked local attention over a sequence, and 2-D window attention
over a feature map, both through torch.nn.functional.scaled_dot_product_attention."""
from __future__ import annotations

from functools import partial
from typing import Optional

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import Tensor, nn

from .. import _checks
from .rotary import RotaryEmbedding

LIGHT_POSITIONS = ("none", "rotary", "relative")


def _look_around(blocks: Tensor, offsets, fill) -> Tensor:
    """Blocks (b, nw, w, ...) -> (b, nw, len(offsets)·w, ...): block i followed by block i - o for
    each offset o (1 = previous, 0 = itself, -1 = next), `fill` where that block does not exist.

    One padded copy and one gather: the backward is a single index_add, where slice-wise
    assignment would clone the whole gradient once per slice.
    """
    b, nw, w = blocks.shape[:3]
    rest = blocks.shape[3:]
    padded = F.pad(blocks.reshape(b, nw * w, -1), (0, 0, w, w), value=fill)  # a fill block at each end
    starts = (torch.arange(nw, device=blocks.device).view(nw, 1) + 1 - torch.tensor(offsets, device=blocks.device)) * w
    index = (starts.view(nw, len(offsets), 1) + torch.arange(w, device=blocks.device)).reshape(-1)
    return padded.index_select(1, index).view(b, nw, len(offsets) * w, *rest)


def blocked_local_attention(q: Tensor, k: Tensor, v: Tensor, *, window: int, causal: bool,
                            key_mask: Optional[Tensor] = None, bias: Optional[Tensor] = None) -> Tensor:
    """q, k, v (b, n, h, d) -> (b, n, h, d). Tokens are cut into blocks of `window`; each block
    attends to itself and its neighbours (previous and next, or only previous with a causal mask
    when causal). A query always sees itself, so padded queries give finite (ignored) outputs.
    bias (h, window, keys) is added to the attention logits of every block (relative positions).

    Blocks are folded into the batch so SDPA sees plain 4-D tensors (b·blocks, h, w, d): that
    keeps CPU and GPU on their fused kernels instead of the materialising math path.
    """
    b, n, h, d = q.shape
    pad = (-n) % window
    if key_mask is None:
        key_mask = torch.ones(b, n, dtype=torch.bool, device=q.device)
    if pad:
        q, k, v = (F.pad(t, (0, 0, 0, 0, 0, pad)) for t in (q, k, v))
        key_mask = F.pad(key_mask, (0, pad), value=False)
    nw = (n + pad) // window
    q, k, v = (t.view(b, nw, window, h, d) for t in (q, k, v))
    km = key_mask.view(b, nw, window)

    neighbours = (1, 0) if causal else (1, 0, -1)
    ks = _look_around(k, neighbours, 0.0)  # (b, nw, L, h, d)
    vs = _look_around(v, neighbours, 0.0)
    kms = _look_around(km, neighbours, False)  # (b, nw, L)

    qi = torch.arange(window, device=q.device).view(window, 1)
    kj = torch.arange(len(neighbours) * window, device=q.device).view(1, -1)
    self_pos = qi + window  # the query's own slot among the keys (its block comes second)
    structure = (kj <= self_pos) if causal else torch.ones_like(kj, dtype=torch.bool)
    allowed = (kms.unsqueeze(-2) & structure) | (kj == self_pos)  # (b, nw, w, L)

    def fold(t: Tensor) -> Tensor:  # (b, nw, len, h, d) -> (b·nw, h, len, d)
        return t.reshape(b * nw, t.shape[2], h, d).transpose(1, 2)

    attn_mask = allowed.view(b * nw, 1, window, -1)
    if bias is not None:
        attn_mask = bias.to(q.dtype).masked_fill(~attn_mask, float("-inf"))  # (b·nw, h, window, keys)
    out = F.scaled_dot_product_attention(fold(q), fold(ks), fold(vs), attn_mask=attn_mask)
    return out.transpose(1, 2).reshape(b, nw * window, h, d)[:, :n]


def window_attention_2d(q: Tensor, k: Tensor, v: Tensor, *, window: int,
                        key_mask: Optional[Tensor] = None) -> Tensor:
    """q, k, v (b, H, W, h, d) -> (b, H, W, h, d): attention inside non-overlapping window×window
    tiles, folded into the batch as (b·tiles, h, window², d) so SDPA takes its fused kernel."""
    b, H, W, h, d = q.shape
    th, tw = H // window, W // window

    def tiles(t: Tensor) -> Tensor:  # (b, H, W, ...) -> (b·tiles, window², ...)
        t = t.reshape(b, th, window, tw, window, *t.shape[3:]).transpose(2, 3)
        return t.reshape(b * th * tw, window * window, *t.shape[5:])

    mask = None
    if key_mask is not None:
        eye = torch.eye(window * window, dtype=torch.bool, device=q.device)
        mask = (tiles(key_mask).unsqueeze(-2) | eye).unsqueeze(1)  # (b·tiles, 1, w², w²)
    out = F.scaled_dot_product_attention(*(tiles(t).transpose(1, 2) for t in (q, k, v)), attn_mask=mask)
    out = out.transpose(1, 2).reshape(b, th, tw, window, window, h, d).transpose(2, 3)
    return out.reshape(b, H, W, h, d)


def light_block_size(window_size: int) -> int:
    """Blocks of half the window: with one neighbour block on each side every token sees at least
    window_size/2 tokens on each side (colt5-attention's light window means the same span)."""
    return max(1, window_size // 2)


class RelativePositionBias(nn.Module):
    """A learned logit bias per head and key offset within the look-around window (as T5's
    relative attention bias, unbucketed): one parameter lets a head look at, say, the token two
    back, which rotary embeddings only learn slowly. The table is kept in units of `scale` logits:
    Adam moves each entry by about lr per step, and a sharp preference needs a bias of several
    logits, which at lr 2e-3 took thousands of steps in unscaled units."""

    scale = 16.0

    def __init__(self, heads: int, block: int, causal: bool):
        super().__init__()
        self.block = block
        self.num_blocks = 2 if causal else 3
        self.table = nn.Parameter(torch.zeros(heads, 4 * block - 1))

    def forward(self) -> Tensor:
        """(heads, block, keys) bias for the block layout of blocked_local_attention."""
        w = self.block
        qi = torch.arange(w, device=self.table.device).view(w, 1)
        kj = torch.arange(self.num_blocks * w, device=self.table.device).view(1, -1)
        offset = kj - w - qi  # key position minus query position
        return self.scale * self.table[:, offset + 2 * w - 1]


class LocalAttention(nn.Module):
    """Multi-head blocked local attention on already-normalised input (b, n, dim): blocks of
    window_size/2 tokens, each attending to itself and its neighbour blocks (only the previous
    one, and causally, when causal). position tells the light branch how far each neighbour is:
    'none', 'rotary' (queries and keys rotated by their positions) or 'relative' (a learned
    logit bias per head and offset)."""

    def __init__(self, dim: int, *, heads: int, dim_head: int, window_size: int, causal: bool = False,
                 checkpoint: bool = False, position: str = "none"):
        super().__init__()
        self.checkpoint = checkpoint
        self.heads = _checks.positive_int("light_heads", heads)
        self.dim_head = _checks.positive_int("light_dim_head", dim_head)
        self.window_size = _checks.positive_int("light_window_size", window_size)
        self.block_size = light_block_size(window_size)
        self.causal = causal
        self.to_qkv = nn.Linear(dim, 3 * heads * dim_head, bias=False)
        self.to_out = nn.Linear(heads * dim_head, dim, bias=False)
        self.position = _checks.one_of("light_position", position, LIGHT_POSITIONS)
        self.rotary = RotaryEmbedding(dim_head) if position == "rotary" else None
        self.relative_bias = (RelativePositionBias(heads, self.block_size, causal) if position == "relative"
                              else None)

    def forward(self, x: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        b, n, _ = x.shape
        q, k, v = self.to_qkv(x).view(b, n, 3, self.heads, self.dim_head).unbind(2)
        if self.rotary is not None:
            q, k = self.rotary(q, k)
        bias = None if self.relative_bias is None else self.relative_bias()
        attend = partial(blocked_local_attention, window=self.block_size, causal=self.causal, key_mask=mask,
                         bias=bias)
        if self.checkpoint and torch.is_grad_enabled():
            out = torch.utils.checkpoint.checkpoint(attend, q, k, v, use_reentrant=False)
        else:
            out = attend(q, k, v)
        return self.to_out(out.reshape(b, n, -1))


class WindowAttention2d(nn.Module):
    """Multi-head attention inside window×window tiles of a (b, H, W, dim) feature map."""

    def __init__(self, dim: int, *, heads: int, dim_head: int, window_size: int):
        super().__init__()
        self.heads = _checks.positive_int("light_heads", heads)
        self.dim_head = _checks.positive_int("light_dim_head", dim_head)
        self.window_size = _checks.positive_int("light_window_size", window_size)
        self.to_qkv = nn.Linear(dim, 3 * heads * dim_head, bias=False)
        self.to_out = nn.Linear(heads * dim_head, dim, bias=False)

    def forward(self, x: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        b, H, W, _ = x.shape
        q, k, v = self.to_qkv(x).view(b, H, W, 3, self.heads, self.dim_head).unbind(3)
        out = window_attention_2d(q, k, v, window=self.window_size, key_mask=mask)
        return self.to_out(out.reshape(b, H, W, -1))

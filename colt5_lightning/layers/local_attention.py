"""Light-branch attention: an exact sliding window over a sequence (blocked SDPA, or FlexAttention
with a block mask on CUDA), and 2-D window attention over a feature map."""
from __future__ import annotations

import warnings
from functools import partial
from typing import Optional

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import Tensor, nn

from .. import _checks
from .rotary import RotaryEmbedding

LIGHT_POSITIONS = ("none", "rotary", "relative")


def _shifted_ranges(offsets, nw: int):
    """For each offset o, by ascending o: (slot, lo, hi, src_lo, src_hi): output blocks lo .. hi-1
    hold blocks src_lo .. src_hi-1 (= j - o) in that slot; the others lie before the start or past
    the end. An offset that reaches past every block gets empty ranges at 0."""
    ranges = []
    for slot, o in sorted(enumerate(offsets), key=lambda so: so[1]):
        lo, hi = min(max(o, 0), nw), max(min(nw + o, nw), 0)
        ranges.append((slot, lo, hi, lo - o, hi - o) if lo < hi else (slot, 0, 0, 0, 0))
    return ranges


class _LookAround(torch.autograd.Function):
    """Strided block copies forward, strided adds backward: both run at memory speed, where an
    index_select/index_add pair goes through per-index gathers (3-4× slower on CPU at the light
    attention's sizes) and a padded copy."""

    @staticmethod
    def forward(ctx, blocks: Tensor, offsets: tuple, fill) -> Tensor:
        b, nw = blocks.shape[:2]
        out = blocks.new_empty(b, nw, len(offsets), *blocks.shape[2:])
        for slot, lo, hi, src_lo, src_hi in _shifted_ranges(offsets, nw):
            out[:, lo:hi, slot] = blocks[:, src_lo:src_hi]
            out[:, :lo, slot] = fill
            out[:, hi:, slot] = fill
        ctx.offsets = offsets
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        # By ascending offset, the order in which the index_add this replaced summed them, so the
        # gradients are the same bit for bit. The first term is copied (0 + a = a), saving a zero-fill.
        (slot, lo, hi, src_lo, src_hi), *rest = _shifted_ranges(ctx.offsets, grad.shape[1])
        grad_blocks = torch.empty_like(grad[:, :, slot], memory_format=torch.contiguous_format)
        grad_blocks[:, src_lo:src_hi] = grad[:, lo:hi, slot]
        grad_blocks[:, :src_lo] = 0
        grad_blocks[:, src_hi:] = 0
        for slot, lo, hi, src_lo, src_hi in rest:
            grad_blocks[:, src_lo:src_hi] += grad[:, lo:hi, slot]
        return grad_blocks, None, None


def _look_around(blocks: Tensor, offsets, fill) -> Tensor:
    """Blocks (b, nw, w, ...) -> (b, nw, len(offsets)·w, ...): block i followed by block i - o for
    each offset o (1 = previous, 0 = itself, -1 = next), `fill` where that block does not exist."""
    b, nw, w = blocks.shape[:3]
    offsets = tuple(offsets)
    if offsets != tuple(range(offsets[0], offsets[0] - len(offsets), -1)):
        raise ValueError(f"offsets must descend by one (look_around_blocks gives them), got {offsets}")
    return _LookAround.apply(blocks, offsets, fill).view(b, nw, len(offsets) * w, *blocks.shape[3:])


def look_around_blocks(block: int, reach_back: int, reach_forward: int) -> tuple:
    """Block offsets (descending: earliest block first, 1 = previous, -1 = next) that cover every
    key within reach_back before and reach_forward after any query of a block."""
    back, forward = -(-reach_back // block), -(-reach_forward // block)
    return tuple(range(back, -forward - 1, -1))


def blocked_local_attention(q: Tensor, k: Tensor, v: Tensor, *, block: int, reach_back: int, reach_forward: int,
                            key_mask: Optional[Tensor] = None, bias: Optional[Tensor] = None) -> Tensor:
    """q, k, v (b, n, h, d) -> (b, n, h, d): an exact sliding window. Query t sees keys t - reach_back
    .. t + reach_forward (reach_forward 0: causal). A query always sees itself, so padded queries
    give finite (ignored) outputs. bias (h, block, keys) is added to the attention logits of every
    block (relative positions; see RelativePositionBias).

    Tokens are cut into blocks of `block`; each block attends to the neighbour blocks that cover
    its window, with a band mask for the exact reach. Blocks are folded into the batch so SDPA sees
    plain 4-D tensors (b·blocks, h, block, d): that keeps CPU and GPU on their fused kernels
    instead of the materialising math path.
    """
    b, n, h, d = q.shape
    pad = (-n) % block
    if key_mask is None:
        key_mask = torch.ones(b, n, dtype=torch.bool, device=q.device)
    if pad:
        q, k, v = (F.pad(t, (0, 0, 0, 0, 0, pad)) for t in (q, k, v))
        key_mask = F.pad(key_mask, (0, pad), value=False)
    nw = (n + pad) // block
    q, k, v = (t.view(b, nw, block, h, d) for t in (q, k, v))
    km = key_mask.view(b, nw, block)

    neighbours = look_around_blocks(block, reach_back, reach_forward)
    ks = _look_around(k, neighbours, 0.0)  # (b, nw, L, h, d)
    vs = _look_around(v, neighbours, 0.0)
    kms = _look_around(km, neighbours, False)  # (b, nw, L)

    offset = key_offsets(block, neighbours, q.device)  # (block, L): key position minus query position
    band = (offset >= -reach_back) & (offset <= reach_forward)
    allowed = (kms.unsqueeze(-2) & band) | (offset == 0)  # (b, nw, block, L)

    def fold(t: Tensor) -> Tensor:  # (b, nw, len, h, d) -> (b·nw, h, len, d)
        return t.reshape(b * nw, t.shape[2], h, d).transpose(1, 2)

    attn_mask = allowed.view(b * nw, 1, block, -1)
    if bias is not None:
        attn_mask = bias.to(q.dtype).masked_fill(~attn_mask, float("-inf"))  # (b·nw, h, block, keys)
    out = F.scaled_dot_product_attention(fold(q), fold(ks), fold(vs), attn_mask=attn_mask)
    return out.transpose(1, 2).reshape(b, nw * block, h, d)[:, :n]


LIGHT_KERNELS = ("auto", "blocked", "flex")
_compiled_flex = None


def flex_local_attention(q: Tensor, k: Tensor, v: Tensor, *, reach_back: int, reach_forward: int,
                         key_mask: Optional[Tensor] = None, relative_table: Optional[Tensor] = None,
                         compiled: bool = False) -> Tensor:
    """blocked_local_attention's result through FlexAttention: the same exact window (query t sees
    keys t - reach_back .. t + reach_forward, masked keys excepted, itself always) as a sparse block
    mask, so only the tiles near the diagonal are computed. relative_table (h, reach_back +
    reach_forward + 1) is a logit bias per head and key offset (RelativePositionBias's, scaled).
    compiled: run torch.compile'd flex_attention (its fused kernel, on CUDA); uncompiled it is a
    reference implementation, fine for checking the mask on a CPU."""
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    global _compiled_flex
    b, n, h, d = q.shape

    def window(batch, head, q_idx, kv_idx):
        inside = (kv_idx - q_idx >= -reach_back) & (kv_idx - q_idx <= reach_forward)
        if key_mask is None:
            return inside
        return inside & (key_mask[batch, kv_idx] | (kv_idx == q_idx))

    block_mask = create_block_mask(window, b if key_mask is not None else None, None, n, n, device=q.device)
    score_mod = None
    if relative_table is not None:
        table = relative_table.to(q.dtype)

        def score_mod(score, batch, head, q_idx, kv_idx):
            offset = (kv_idx - q_idx + reach_back).clamp(0, reach_back + reach_forward)
            return score + table[head, offset]

    attend = flex_attention
    if compiled:
        _compiled_flex = _compiled_flex or torch.compile(flex_attention)
        attend = _compiled_flex
    out = attend(*(t.transpose(1, 2) for t in (q, k, v)), score_mod=score_mod, block_mask=block_mask)
    return out.transpose(1, 2)


def key_offsets(block: int, neighbours: tuple, device=None) -> Tensor:
    """(block, len(neighbours)·block) long: for each query of a block and each looked-around key
    slot, the key's position minus the query's."""
    own = neighbours.index(0)  # the query's own block among the looked-around ones
    qi = torch.arange(block, device=device).view(block, 1)
    kj = torch.arange(len(neighbours) * block, device=device).view(1, -1)
    return kj - own * block - qi


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
    """The blocks the light attention computes in (and a causal router's segments): half the
    window, so the exact window of ±window_size/2 spans three blocks."""
    return max(1, window_size // 2)


def light_reach(window_size: int, causal: bool) -> tuple:
    """(reach_back, reach_forward) of the light window: ±window_size/2 as in colt5-attention
    around each token, or window_size back when causal."""
    return (window_size, 0) if causal else (window_size // 2, window_size // 2)


class RelativePositionBias(nn.Module):
    """A learned logit bias per head and key offset within the window (as T5's relative attention
    bias, unbucketed): one parameter lets a head look at, say, the token two back, which rotary
    embeddings only learn slowly. The table is kept in units of `scale` logits: Adam moves each
    entry by about lr per step, and a sharp preference needs a bias of several logits, which at
    lr 2e-3 took thousands of steps in unscaled units."""

    scale = 16.0

    def __init__(self, heads: int, block: int, reach_back: int, reach_forward: int):
        super().__init__()
        self.block, self.reach_back, self.reach_forward = block, reach_back, reach_forward
        self.neighbours = look_around_blocks(block, reach_back, reach_forward)
        self.table = nn.Parameter(torch.zeros(heads, reach_back + reach_forward + 1))

    def forward(self) -> Tensor:
        """(heads, block, keys) bias for the block layout of blocked_local_attention; entries
        outside the window (masked there) repeat the edge of the table."""
        offset = key_offsets(self.block, self.neighbours, self.table.device)
        index = (offset + self.reach_back).clamp(0, self.reach_back + self.reach_forward)
        return self.scale * self.table[:, index]


class LocalAttention(nn.Module):
    """Multi-head sliding-window attention on already-normalised input (b, n, dim): each token
    sees the tokens within window_size/2 on either side, or window_size back when causal (the
    bidirectional reach of colt5-attention's light branch; its causal window is blocked and reaches
    window_size to 2·window_size - 1 back). position tells the light branch how far each key is:
    'none', 'rotary' (queries and keys rotated by their positions) or 'relative' (a learned
    logit bias per head and offset)."""

    def __init__(self, dim: int, *, heads: int, dim_head: int, window_size: int, causal: bool = False,
                 checkpoint: bool = False, position: str = "none", kernel: str = "auto"):
        super().__init__()
        self.checkpoint = checkpoint
        # auto: FlexAttention's compiled block-sparse kernel on CUDA, the blocked SDPA kernel elsewhere
        self.kernel = _checks.one_of("kernel", kernel, LIGHT_KERNELS)
        self.heads = _checks.positive_int("light_heads", heads)
        self.dim_head = _checks.positive_int("light_dim_head", dim_head)
        self.window_size = _checks.positive_int("light_window_size", window_size)
        self.block_size = light_block_size(window_size)
        self.reach = light_reach(window_size, causal)
        self.causal = causal
        self.to_qkv = nn.Linear(dim, 3 * heads * dim_head, bias=False)
        self.to_out = nn.Linear(heads * dim_head, dim, bias=False)
        self.position = _checks.one_of("light_position", position, LIGHT_POSITIONS)
        self.rotary = RotaryEmbedding(dim_head) if position == "rotary" else None
        self.relative_bias = (RelativePositionBias(heads, self.block_size, *self.reach) if position == "relative"
                              else None)

    def forward(self, x: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        b, n, _ = x.shape
        q, k, v = self.to_qkv(x).view(b, n, 3, self.heads, self.dim_head).unbind(2)
        if self.rotary is not None:
            q, k = self.rotary(q, k)
        if self.kernel == "flex" or (self.kernel == "auto" and q.is_cuda):
            table = None if self.relative_bias is None else self.relative_bias.scale * self.relative_bias.table
            attend = partial(flex_local_attention, reach_back=self.reach[0], reach_forward=self.reach[1],
                             key_mask=mask, relative_table=table, compiled=q.is_cuda)
        else:
            bias = None if self.relative_bias is None else self.relative_bias()
            attend = partial(blocked_local_attention, block=self.block_size, reach_back=self.reach[0],
                             reach_forward=self.reach[1], key_mask=mask, bias=bias)
        try:
            if self.checkpoint and torch.is_grad_enabled():
                out = torch.utils.checkpoint.checkpoint(attend, q, k, v, use_reentrant=False)
            else:
                out = attend(q, k, v)
        except Exception as ex:  # noqa: BLE001 - the CUDA FlexAttention path has not run on every GPU
            # out of memory is the run's size, not the kernel: the blocked kernel would need more
            if self.kernel != "auto" or not q.is_cuda or isinstance(ex, torch.OutOfMemoryError):
                raise
            warnings.warn(f"FlexAttention failed for the light branch ({type(ex).__name__}: {str(ex)[:200]}); "
                          "using the blocked SDPA kernel from now on", RuntimeWarning, stacklevel=2)
            self.kernel = "blocked"
            return self.forward(x, mask)
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

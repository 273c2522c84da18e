"""RoutingConfig: every routed-block setting a model or LightningModule takes, written once.

Models and LightningModules take one `routing` argument; in YAML it is one `routing:` block
whose fields LightningCLI lists, each with the description below, under `colt5 fit --help`.
A knob is added here (a field with its default and its line in the docstring) and in the layer
that reads it; the models pass the whole config on. The seed-API block classes
(ConditionalRoutedTransformerBlock and friends) keep colt5-attention's flat keywords and defaults.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping, Optional, Union


@dataclass(frozen=True)
class RoutingConfig:
    """How each routed block is built.

    Args:
        num_heavy_attn_tokens_q: queries routed to the heavy attention (for a causal model: a
            budget for max_seq_len tokens).
        num_heavy_attn_tokens_kv: key/values routed to the heavy attention, per route.
        num_heavy_ff_tokens: tokens routed to the heavy feed-forward.
        light_dim_head: width of each light (local) attention head.
        light_heads: light attention heads.
        light_window_size: the light attention's window: each token sees light_window_size / 2
            tokens to either side (causal: light_window_size tokens back).
        heavy_dim_head: width of each heavy attention head.
        heavy_heads: heavy attention heads (a multiple of num_routed_kv).
        light_ff_mult: hidden width of the light feed-forward, as a multiple of dim.
        heavy_ff_mult: hidden width of the heavy feed-forward, as a multiple of dim.
        num_routed_kv: key/value routes; the heavy heads are split between them.
        router_straight_through: routed outputs scaled by 1 in the forward pass, the router's
            weight still carrying the gradient (colt5-attention's default is True).
        router_type: the soft top-k of every router: coor_descent, sinkhorn or cum_softmax.
        router_kwargs: further Router arguments, e.g. {score_noise: 1.0}, {score_noise: 1.0,
            eval_noise: fixed} (the noise kept in eval as one fixed draw) or {n_iters: 50}.
        kv_scaling: how the key/value router's weights enter the heavy attention: "inputs" (the
            paper: keys and values) or "values" (colt5-attention: values only).
        heavy: false drops every heavy branch and its routers (the light-only ablation).
        light_position: how the light attention sees distances: none, rotary or relative.
        use_null_q_tokens: queries the router did not pick get a learned output from the heavy
            attention instead of nothing (colt5-attention's default is True).
        multiply_queries_by_score: the query router's weights also scale the routed queries.
        has_light_attn: false drops the light attention (the heavy-only ablation; the light
            feed-forward stays).
        heavy_queries: "routed" (CoLT5: a router picks num_heavy_attn_tokens_q queries) or "all"
            (no query router: every position reads the routed key/values, so retrieval needs
            only the key/value router to find the evidence; more heavy attention cost).
        kv_routed_by: "hidden" (CoLT5: each layer's key/value router scores that layer's input)
            or "embedding" (it scores the model's embeddings; the tokens routed are still the
            layer's own), so a deep layer keeps tokens recognisable by what they are.
    """

    num_heavy_attn_tokens_q: int = 64
    num_heavy_attn_tokens_kv: int = 64
    num_heavy_ff_tokens: int = 64
    light_dim_head: int = 64
    light_heads: int = 4
    light_window_size: int = 64
    heavy_dim_head: int = 64
    heavy_heads: int = 4
    light_ff_mult: float = 0.5
    heavy_ff_mult: float = 4.0
    num_routed_kv: int = 1
    router_straight_through: bool = False
    router_type: str = "coor_descent"
    router_kwargs: Optional[dict] = None
    kv_scaling: str = "inputs"
    heavy: bool = True
    light_position: str = "none"
    use_null_q_tokens: bool = False
    multiply_queries_by_score: bool = False
    has_light_attn: bool = True
    heavy_queries: str = "routed"
    kv_routed_by: str = "hidden"

    @classmethod
    def of(cls, value: Union["RoutingConfig", Mapping[str, Any], None]) -> "RoutingConfig":
        """A RoutingConfig from itself, a mapping of its fields (a checkpoint's hyper-parameters,
        a YAML block) or None (every default)."""
        return coerce(cls, "routing", value)

    def block_kwargs(self) -> dict:
        """Keyword arguments for ConditionalRoutedTransformerBlock."""
        return asdict(self)

    def replace(self, **changes) -> "RoutingConfig":
        return type(self).of({**asdict(self), **changes})


def coerce(cls, name: str, value):
    """An instance of the dataclass cls from an instance, a mapping of its fields, or None."""
    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    if isinstance(value, Mapping):
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(f"{name} has no setting {', '.join(map(repr, unknown))}; "
                             f"its settings are: {', '.join(sorted(known))}")
        return cls(**value)
    raise TypeError(f"{name} must be a {cls.__name__}, a mapping of its fields or None, got {type(value).__name__}")

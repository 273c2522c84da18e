"""Routing math: soft top-k solvers, the Router module and gather/scatter helpers."""
from .coordinate_descent_router import CoordinateDescentRouter, RouterReturn
from .gather import gather_tokens, scatter_add_tokens
from .router import ROUTER_TYPES, Router, Routing
from .soft_topk import coor_descent, coor_descent_dual, cum_softmax_topk, eps_schedule, sinkhorn_topk
from .topk import TopkReturn, topk

__all__ = ["ROUTER_TYPES", "CoordinateDescentRouter", "Router", "RouterReturn", "Routing", "coor_descent", "coor_descent_dual", "cum_softmax_topk",
           "eps_schedule", "gather_tokens", "scatter_add_tokens", "sinkhorn_topk", "topk", "TopkReturn"]

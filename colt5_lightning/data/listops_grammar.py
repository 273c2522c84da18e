"""The Long Range Arena ListOps language: vocabulary, evaluator and generator.

An expression is a digit 0-9 or a list ``[ OP arg arg ... ]`` with OP one of

* ``MIN`` / ``MAX``: smallest / largest argument,
* ``MED``: the median as LRA computes it, ``int(numpy.median(args))``: for an even
  number of arguments the two middle values are averaged and truncated,
* ``SM``: sum modulo 10.

Text form follows LRA, e.g. ``[MAX 4 3 [MIN 2 3 ] 1 0 ]``; as tokens, ``[MAX`` is two
tokens, ``[`` and ``MAX``, so that expression is 12 tokens long.
"""
from __future__ import annotations

import math
from typing import Iterable, List, Sequence, Union

import numpy as np
import torch

PAD = "<pad>"
DIGITS = tuple(str(d) for d in range(10))
OPERATORS = ("MIN", "MAX", "MED", "SM")
OPEN, CLOSE = "[", "]"
VOCAB = (PAD,) + DIGITS + OPERATORS + (OPEN, CLOSE)
TOKEN_TO_ID = {token: i for i, token in enumerate(VOCAB)}
PAD_ID = TOKEN_TO_ID[PAD]
NUM_CLASSES = 10
MIN_LIST_TOKENS = 4  # "[ OP digit ]"
MAX_ARGS = 5  # typical arguments per list; deeper lists are widened only when depth runs out


def apply(op: str, args: Sequence[int]) -> int:
    if not args:
        raise ValueError(f"list with operator {op} has no arguments")
    if op == "MIN":
        return min(args)
    if op == "MAX":
        return max(args)
    if op == "MED":
        ordered = sorted(args)
        middle = len(ordered) // 2
        return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) // 2
    if op == "SM":
        return sum(args) % 10
    raise ValueError(f"unknown operator {op!r}; expected one of {OPERATORS}")


def tokenize(text: str) -> List[str]:
    """Split LRA-style text (``"[MAX 4 [MIN 2 3 ] ]"``) into tokens; ``[MAX`` gives ``[``, ``MAX``."""
    tokens: List[str] = []
    for piece in text.split():
        if piece.startswith(OPEN) and len(piece) > 1:
            tokens.extend((OPEN, piece[1:]))
        else:
            tokens.append(piece)
    for token in tokens:
        if token not in TOKEN_TO_ID or token == PAD:
            raise ValueError(f"unknown ListOps token {token!r}")
    return tokens


def to_text(tokens: Sequence[str]) -> str:
    """LRA-style text: ``[`` is glued to its operator."""
    return " ".join(tokens).replace(OPEN + " ", OPEN)


def encode(tokens: Sequence[str]) -> List[int]:
    return [TOKEN_TO_ID[t] for t in tokens]


def decode(ids: Union[torch.Tensor, Iterable[int]]) -> List[str]:
    """Token strings for ``ids``, with padding dropped."""
    if isinstance(ids, torch.Tensor):
        ids = ids.reshape(-1).tolist()
    out = []
    for i in ids:
        i = int(i)
        if not 0 <= i < len(VOCAB):
            raise ValueError(f"token id {i} outside the ListOps vocabulary [0, {len(VOCAB)})")
        if i != PAD_ID:
            out.append(VOCAB[i])
    return out


def _as_tokens(tokens) -> List[str]:
    if isinstance(tokens, str):
        return tokenize(tokens)
    if isinstance(tokens, (torch.Tensor, np.ndarray)):
        return decode(tokens.tolist())
    tokens = list(tokens)
    if tokens and not isinstance(tokens[0], str):
        return decode(tokens)
    return tokens


def evaluate(tokens: Union[str, Sequence[str], Sequence[int], torch.Tensor]) -> int:
    """The value (0-9) of one ListOps expression.

    ``tokens`` may be text, a list of token strings, or token ids (padding is ignored).
    Malformed input (unbalanced brackets, a list without operator or arguments, trailing
    tokens) raises ``ValueError``. Iterative, so nesting depth is not limited by recursion.
    """
    stack: List[tuple] = []
    result = None
    expect_op = False
    for token in _as_tokens(tokens):
        if result is not None:
            raise ValueError(f"unexpected token {token!r} after the end of the expression")
        if expect_op:
            if token not in OPERATORS:
                raise ValueError(f"'[' must be followed by an operator {OPERATORS}, got {token!r}")
            stack.append((token, []))
            expect_op = False
        elif token == OPEN:
            expect_op = True
        elif token == CLOSE:
            if not stack:
                raise ValueError("unbalanced ']' with no open list")
            op, args = stack.pop()
            value = apply(op, args)
            if stack:
                stack[-1][1].append(value)
            else:
                result = value
        elif token in DIGITS:
            if stack:
                stack[-1][1].append(int(token))
            else:
                result = int(token)
        elif token in OPERATORS:
            raise ValueError(f"operator {token!r} must directly follow '['")
        else:
            raise ValueError(f"unknown ListOps token {token!r}")
    if expect_op or stack:
        raise ValueError("expression ends inside an open list")
    if result is None:
        raise ValueError("empty expression")
    return result


def depth(tokens: Sequence[str]) -> int:
    """Deepest list nesting (a flat list has depth 1, a lone digit 0)."""
    deepest = current = 0
    for token in tokens:
        if token == OPEN:
            current += 1
            deepest = max(deepest, current)
        elif token == CLOSE:
            current -= 1
    return deepest


def _capacity(levels: int) -> int:
    """Tokens a list with ``levels`` levels of nesting holds at ``MAX_ARGS`` arguments per list."""
    size = 3 + MAX_ARGS
    for _ in range(levels - 1):
        size = 3 + MAX_ARGS * size
    return size


def _split(rng: np.random.Generator, total: int, parts: int, minimum: int) -> List[int]:
    """``parts`` random positive sizes, each >= ``minimum``, summing to ``total``."""
    spare = total - parts * minimum
    cuts = np.sort(rng.integers(0, spare + 1, size=parts - 1))
    edges = np.concatenate(([0], cuts, [spare]))
    return [minimum + int(e) for e in np.diff(edges)]


def _emit_list(rng: np.random.Generator, size: int, level: int, max_depth: int, out: List[str]) -> None:
    """Append a list of exactly ``size`` tokens (>= 4) at nesting ``level`` (1 = outermost)."""
    out.append(OPEN)
    out.append(OPERATORS[int(rng.integers(len(OPERATORS)))])
    budget = size - 3
    args: List[object] = []  # an int is a digit, a list size is a tuple
    if level >= max_depth or budget < MIN_LIST_TOKENS:
        args = [None] * budget
    else:
        width = int(rng.integers(2, MAX_ARGS + 1))
        digits = int(rng.integers(0, width))
        list_budget = budget - digits
        sublists = width - digits
        # Widen when the remaining depth cannot hold the budget at MAX_ARGS per list.
        sublists = max(sublists, math.ceil(list_budget / _capacity(max_depth - level)))
        sublists = min(sublists, list_budget // MIN_LIST_TOKENS)
        if sublists == 0:
            args = [None] * budget
        else:
            args = [None] * digits + [(s,) for s in _split(rng, list_budget, sublists, MIN_LIST_TOKENS)]
            rng.shuffle(args)
    for arg in args:
        if arg is None:
            out.append(DIGITS[int(rng.integers(10))])
        else:
            _emit_list(rng, arg[0], level + 1, max_depth, out)
    out.append(CLOSE)


def generate(rng: np.random.Generator, min_length: int, max_length: int, max_depth: int) -> List[str]:
    """A random expression whose token count is in ``[min_length, max_length]`` and depth <= ``max_depth``.

    The length is drawn first and the tree is built to exactly that size, so no sample
    is ever rejected (generation takes a few milliseconds at 2000 tokens).
    """
    if min_length < MIN_LIST_TOKENS:
        raise ValueError(f"min_length must be at least {MIN_LIST_TOKENS} (the shortest list), got {min_length}")
    if max_length < min_length:
        raise ValueError(f"max_length ({max_length}) must be at least min_length ({min_length})")
    if max_depth < 1:
        raise ValueError(f"max_depth must be at least 1, got {max_depth}")
    tokens: List[str] = []
    _emit_list(rng, int(rng.integers(min_length, max_length + 1)), 1, max_depth, tokens)
    return tokens

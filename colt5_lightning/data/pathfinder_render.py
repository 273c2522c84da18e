"""Drawing Pathfinder-style images with numpy: smooth dashed curves and endpoint dots.

A curve is a random walk with unit speed whose heading turns by a bounded random
angle at every step, so it bends smoothly and never folds back sharply. Curves are
sampled every ``STEP`` pixels and drawn as dashes: ``dash_length`` pixels on,
``dash_length`` pixels off, starting and ending with a dash, so a dot placed on an
endpoint always touches ink.

Both classes have the same amount of ink: two "owner" curves plus the distractors.
Positive: one curve joins the two dots (the second owner curve is another
distractor). Negative: the two dots are the endpoints of a curve that is *not*
drawn, and each dot starts its own curve that stays clear of the other dot, so dot
distance carries no hint of the label.
"""
from __future__ import annotations

from typing import List, Optional

import numpy as np

STEP = 0.5  # pixels between consecutive curve samples
MAX_TRIES = 100


class Canvas:
    """Geometry shared by every image of one size."""

    def __init__(self, size: int, dash_length: int) -> None:
        self.size = size
        self.dash_length = dash_length
        scale = size / 32
        self.dot_radius = 1.0 + scale
        self.margin = self.dot_radius + 1.0
        self.clearance = self.dot_radius + 2.0  # how near a foreign curve may pass a dot
        # Radians per step. The heading is a random walk, so its spread over a whole curve
        # (about 0.8 rad) is the same at every image size when the bound shrinks as 1/sqrt(size).
        self.max_turn = 0.32 * np.sqrt(STEP / scale)
        self.length_range = (0.45 * size, 0.75 * size)
        ys, xs = np.mgrid[0:size, 0:size]
        self._grid = np.stack([xs, ys], axis=-1).astype(np.float32)

    def curve_length(self, rng: np.random.Generator) -> float:
        """A length that is a whole odd number of dash units, so the curve ends in a dash."""
        units = int(rng.uniform(*self.length_range) / self.dash_length)
        units += 1 - units % 2
        return units * self.dash_length

    def shape(self, rng: np.random.Generator) -> np.ndarray:
        """A random curve starting at the origin, as (n, 2) points in (x, y)."""
        n = int(round(self.curve_length(rng) / STEP)) + 1
        turns = rng.uniform(-self.max_turn, self.max_turn, size=n - 1)
        headings = rng.uniform(0, 2 * np.pi) + np.cumsum(turns)
        steps = STEP * np.stack([np.cos(headings), np.sin(headings)], axis=-1)
        return np.concatenate([np.zeros((1, 2)), np.cumsum(steps, axis=0)])

    def inside(self, points: np.ndarray) -> bool:
        lo, hi = self.margin, self.size - 1 - self.margin
        return bool((points >= lo).all() and (points <= hi).all())

    def clear_of(self, points: np.ndarray, dots: List[np.ndarray]) -> bool:
        return all(np.min(np.linalg.norm(points - d, axis=-1)) > self.clearance for d in dots)

    def placed_curve(self, rng: np.random.Generator, avoid: List[np.ndarray]) -> Optional[np.ndarray]:
        """A curve anywhere on the canvas that stays clear of the ``avoid`` dots (None if none found)."""
        lo, hi = self.margin, self.size - 1 - self.margin
        for _ in range(MAX_TRIES):
            points = self.shape(rng)
            low, high = points.min(axis=0), points.max(axis=0)
            room_low, room_high = lo - low, hi - high
            if (room_low > room_high).any():
                continue
            points = points + rng.uniform(room_low, room_high)
            if self.clear_of(points, avoid):
                return points
        return None

    def curve_from(self, rng: np.random.Generator, start: np.ndarray, avoid: List[np.ndarray]) -> Optional[np.ndarray]:
        """A curve beginning at ``start`` that stays inside the canvas and clear of ``avoid``."""
        for _ in range(MAX_TRIES):
            points = self.shape(rng) + start
            if self.inside(points) and self.clear_of(points, avoid):
                return points
        return None

    def draw_dashed(self, image: np.ndarray, points: np.ndarray) -> None:
        arc = np.arange(len(points)) * STEP
        # Dash k covers arc length [2k, 2k + 1] * dash_length; the final point closes the last dash.
        on = (np.floor(arc / self.dash_length + 1e-6) % 2 == 0) | (np.arange(len(points)) == len(points) - 1)
        pixels = np.rint(points[on]).astype(np.int64)
        pixels = np.clip(pixels, 0, self.size - 1)
        image[pixels[:, 1], pixels[:, 0]] = 1.0

    def draw_dot(self, image: np.ndarray, center: np.ndarray) -> None:
        disc = np.linalg.norm(self._grid - center.astype(np.float32), axis=-1) <= self.dot_radius
        image[disc] = 1.0


def render(rng: np.random.Generator, canvas: Canvas, label: int, num_distractors: int) -> np.ndarray:
    """One (size, size) float32 image in [0, 1] with the given label (1 = dots connected)."""
    image = np.zeros((canvas.size, canvas.size), dtype=np.float32)
    curves: Optional[List[np.ndarray]] = None
    for _ in range(MAX_TRIES):
        joining = canvas.placed_curve(rng, avoid=[])
        if joining is None:
            continue
        a, b = joining[0], joining[-1]
        if label == 1:
            curves = [joining]
            break
        from_a = canvas.curve_from(rng, a, avoid=[b])
        from_b = canvas.curve_from(rng, b, avoid=[a])
        if from_a is not None and from_b is not None:
            curves = [from_a, from_b]
            break
    if curves is None:  # pragma: no cover - unreachable for the allowed image sizes
        raise RuntimeError("could not place the curves that carry the two dots")
    # A positive image has one dot-carrying curve instead of two; an extra distractor evens the ink.
    for _ in range(num_distractors + (1 if label == 1 else 0)):
        curve = canvas.placed_curve(rng, avoid=[a, b])
        if curve is not None:
            curves.append(curve)
    for curve in curves:
        canvas.draw_dashed(image, curve)
    canvas.draw_dot(image, a)
    canvas.draw_dot(image, b)
    return image

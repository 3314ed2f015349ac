"""Product images: a 96x96 PNG whose shapes and colour family carry the topic."""

from __future__ import annotations

import colorsys
import io
import math
from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image, ImageDraw
from tlrec.services.demo_catalog.constants import IMAGE_SIZE

_Point = tuple[float, float]
_Colour = Callable[[], tuple[int, int, int]]
_Draw = Callable[[ImageDraw.ImageDraw, np.random.Generator, _Colour], None]


def _hsv(h: float, s: float, v: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0))
    return int(round(r * 255)), int(round(g * 255)), int(round(b * 255))


def _polygon(cx: float, cy: float, radii: Sequence[float], rot: float) -> list[_Point]:
    n = len(radii)
    return [
        (cx + r * math.cos(rot + 2 * math.pi * k / n), cy + r * math.sin(rot + 2 * math.pi * k / n))
        for k, r in enumerate(radii)
    ]


def _draw_circles(d: ImageDraw.ImageDraw, rng: np.random.Generator, col: _Colour) -> None:
    for _ in range(int(rng.integers(1, 6))):
        r = rng.uniform(8, 22)
        cx, cy = rng.uniform(r, IMAGE_SIZE - r, size=2)
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=col())


def _draw_stripes(d: ImageDraw.ImageDraw, rng: np.random.Generator, col: _Colour) -> None:
    period = rng.uniform(10, 18)
    width = period * rng.uniform(0.4, 0.6)
    y = -rng.uniform(0, period)
    c = col()
    while y < IMAGE_SIZE:
        d.rectangle([0, y, IMAGE_SIZE, y + width], fill=c)
        y += period


def _draw_triangles(d: ImageDraw.ImageDraw, rng: np.random.Generator, col: _Colour) -> None:
    for _ in range(int(rng.integers(2, 5))):
        r = rng.uniform(14, 30)
        cx, cy = rng.uniform(r * 0.6, IMAGE_SIZE - r * 0.6, size=2)
        d.polygon(_polygon(cx, cy, [r, r, r], rng.uniform(0, 2 * math.pi)), fill=col())


def _draw_checkerboard(d: ImageDraw.ImageDraw, rng: np.random.Generator, col: _Colour) -> None:
    cell = rng.uniform(10, 16)
    ox, oy = rng.uniform(0, cell, size=2)
    c = col()
    n = int(IMAGE_SIZE / cell) + 2
    for i in range(-1, n):
        for j in range(-1, n):
            if (i + j) % 2 == 0:
                x, y = i * cell - ox, j * cell - oy
                d.rectangle([x, y, x + cell, y + cell], fill=c)


def _draw_rings(d: ImageDraw.ImageDraw, rng: np.random.Generator, col: _Colour) -> None:
    cx, cy = IMAGE_SIZE / 2 + rng.uniform(-14, 14, size=2)
    spacing = rng.uniform(8, 12)
    width = int(rng.integers(3, 6))
    c = col()
    r = rng.uniform(3, spacing)
    while r < IMAGE_SIZE * 0.8:
        d.ellipse([cx - r, cy - r, cx + r, cy + r], outline=c, width=width)
        r += spacing


def _draw_stars(d: ImageDraw.ImageDraw, rng: np.random.Generator, col: _Colour) -> None:
    for _ in range(int(rng.integers(1, 4))):
        r = rng.uniform(14, 28)
        inner = r * rng.uniform(0.38, 0.5)
        cx, cy = rng.uniform(r * 0.7, IMAGE_SIZE - r * 0.7, size=2)
        d.polygon(_polygon(cx, cy, [r, inner] * 5, rng.uniform(0, 2 * math.pi)), fill=col())


def _draw_waves(d: ImageDraw.ImageDraw, rng: np.random.Generator, col: _Colour) -> None:
    n = int(rng.integers(3, 6))
    amp, wavelength = rng.uniform(4, 10), rng.uniform(20, 40)
    width = int(rng.integers(3, 6))
    xs = np.arange(0, IMAGE_SIZE + 4, 2, dtype=float)
    phase = rng.uniform(0, 2 * math.pi)
    for k in range(n):
        y0 = (k + 0.5) * IMAGE_SIZE / n + rng.uniform(-3, 3)
        ys = y0 + amp * np.sin(2 * math.pi * xs / wavelength + phase)
        d.line(list(zip(xs.tolist(), ys.tolist())), fill=col(), width=width)


def _draw_crosses(d: ImageDraw.ImageDraw, rng: np.random.Generator, col: _Colour) -> None:
    for _ in range(int(rng.integers(2, 7))):
        arm, t = rng.uniform(10, 20), rng.uniform(2, 3.5)
        cx, cy = rng.uniform(arm, IMAGE_SIZE - arm, size=2)
        c = col()
        d.rectangle([cx - arm, cy - t, cx + arm, cy + t], fill=c)
        d.rectangle([cx - t, cy - arm, cx + t, cy + arm], fill=c)


# name -> (hue, saturation range, value range, drawing function)
_PRODUCT_SPECS: dict[str, tuple[float, tuple[float, float], tuple[float, float], _Draw]] = {
    "red_circles": (0.0, (0.75, 1.0), (0.75, 0.95), _draw_circles),
    "blue_stripes": (0.62, (0.7, 1.0), (0.6, 0.9), _draw_stripes),
    "green_triangles": (0.33, (0.7, 1.0), (0.5, 0.8), _draw_triangles),
    "yellow_checkerboard": (0.15, (0.75, 1.0), (0.85, 1.0), _draw_checkerboard),
    "purple_rings": (0.78, (0.55, 0.85), (0.5, 0.8), _draw_rings),
    "orange_stars": (0.08, (0.8, 1.0), (0.9, 1.0), _draw_stars),
    "cyan_waves": (0.5, (0.7, 1.0), (0.75, 0.95), _draw_waves),
    "black_crosses": (0.0, (0.0, 0.1), (0.05, 0.25), _draw_crosses),
}
PRODUCT_TOPICS: tuple[str, ...] = tuple(f"product:{name}" for name in _PRODUCT_SPECS)


def render_product(topic: str, rng: np.random.Generator) -> Image.Image:
    """Draw a 96x96 RGB image whose shape and colour family show ``topic``."""
    hue, (s_lo, s_hi), (v_lo, v_hi), draw_fn = _PRODUCT_SPECS[topic]
    base_hue = hue + rng.uniform(-0.025, 0.025)
    bg = _hsv(rng.uniform(0, 1), rng.uniform(0.0, 0.12), rng.uniform(0.86, 1.0))
    img = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), bg)

    def colour() -> tuple[int, int, int]:
        return _hsv(base_hue + rng.uniform(-0.015, 0.015), rng.uniform(s_lo, s_hi), rng.uniform(v_lo, v_hi))

    draw_fn(ImageDraw.Draw(img), rng, colour)
    pixels = np.asarray(img, dtype=np.float32)
    pixels = pixels + rng.normal(0.0, rng.uniform(3, 10), size=pixels.shape)
    return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), "RGB")


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()

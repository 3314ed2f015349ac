"""Sizes, time window and behaviour constants of the demo world."""

from __future__ import annotations

import numpy as np

EPOCH: int = 1_700_000_000
"""Start of the interaction log (unix seconds, 2023-11-14)."""
WINDOW_S: int = 90 * 86_400
"""Length of the interaction log: 90 days."""
IMAGE_SIZE: int = 96
SAMPLE_RATE: int = 16_000
AUDIO_DURATION_S: float = 1.5

FAVOURITE_PROB: float = 0.75
"""Probability that an event hits one of the user's favourite topics."""
COLD_FRACTION: float = 0.05
"""Share of items that are new and have no interactions at all."""
ZIPF_ALPHA: float = 0.9
"""Exponent of the item popularity law ``w = (rank + 1) ** -alpha``."""
SPARSE_USER_FRACTION: float = 0.08
MIN_ITEMS: int = 48
"""Smallest catalog that still holds two items of each of the 24 topics."""

DOMAINS: tuple[str, str, str] = ("film", "product", "track")
DOMAIN_SHARE = {"film": 0.4, "product": 0.3, "track": 0.3}
ID_PREFIX = {"film": "film", "product": "prod", "track": "track"}

# Event funnel per kind of event: (view, click, cart, purchase).
EVENTS: tuple[str, ...] = ("view", "click", "cart", "purchase")
FUNNEL_FAVOURITE = np.array([0.74, 0.14, 0.07, 0.05])
FUNNEL_GLOBAL = np.array([0.88, 0.08, 0.03, 0.01])

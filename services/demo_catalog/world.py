"""The demo world: items with planted topics, users with planted tastes, and the files they are written to."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
from tlrec.errors import UsageError
from tlrec.services.demo_catalog.audio import TRACK_TOPICS, render_track, wav_bytes
from tlrec.services.demo_catalog.constants import (
    COLD_FRACTION,
    DOMAIN_SHARE,
    EPOCH,
    EVENTS,
    FAVOURITE_PROB,
    FUNNEL_FAVOURITE,
    FUNNEL_GLOBAL,
    ID_PREFIX,
    MIN_ITEMS,
    SPARSE_USER_FRACTION,
    WINDOW_S,
    ZIPF_ALPHA,
)
from tlrec.services.demo_catalog.images import PRODUCT_TOPICS, png_bytes, render_product
from tlrec.services.demo_catalog.text import (
    FILM_TOPICS,
    film_text,
    product_text,
    track_text,
)
from tlrec.progress import progress_bar

from tlrec.files import write_bytes_atomic, write_parquet_atomic

logger = logging.getLogger(__name__)

@dataclass(frozen=True)
class DemoFiles:
    """Paths of a generated demo dataset.

    Attributes:
        catalog: ``out_dir/catalog.parquet``.
        interactions: ``out_dir/interactions.parquet``.
        images_dir: ``out_dir/images`` (one PNG per product).
        audio_dir: ``out_dir/audio`` (one WAV per track).
        truth: ``out_dir/truth`` with ``item_topics.parquet`` and ``user_tastes.parquet``.
    """

    catalog: Path
    interactions: Path
    images_dir: Path
    audio_dir: Path
    truth: Path



TOPICS: tuple[str, ...] = FILM_TOPICS + PRODUCT_TOPICS + TRACK_TOPICS
"""All 24 topics, ``"<domain>:<name>"``; the index in this tuple is the topic id."""


def _child_rng(seed: int, *keys: int) -> np.random.Generator:
    """An independent, reproducible generator for ``(seed, *keys)``."""
    return np.random.default_rng([seed, *keys])


# --------------------------------------------------------------------------- items


@dataclass
class _Items:
    item_id: list[str]
    domain: list[str]
    topic: np.ndarray  # int index into TOPICS
    weight: np.ndarray  # popularity weight, 0 for cold items
    cold: np.ndarray  # bool


def _domain_sizes(n_items: int) -> dict[str, int]:
    n_film = int(round(n_items * DOMAIN_SHARE["film"]))
    n_prod = int(round(n_items * DOMAIN_SHARE["product"]))
    return {"film": n_film, "product": n_prod, "track": n_items - n_film - n_prod}


def _plan_items(n_items: int, seed: int) -> _Items:
    """Ids, domains, topics, popularity weights and the cold set of all items."""
    rng = _child_rng(seed, 1)
    ids: list[str] = []
    domains: list[str] = []
    topics: list[np.ndarray] = []
    width = max(4, len(str(n_items)))
    offsets = {"film": 0, "product": len(FILM_TOPICS), "track": len(FILM_TOPICS) + len(PRODUCT_TOPICS)}
    for domain, n in _domain_sizes(n_items).items():
        ids += [f"{ID_PREFIX[domain]}-{i:0{width}d}" for i in range(1, n + 1)]
        domains += [domain] * n
        # balanced topics (each of the 8 gets n/8 items), in random order
        topics.append(offsets[domain] + rng.permutation(np.arange(n) % 8))
    topic = np.concatenate(topics)

    # Global popularity: Zipf over a random ranking of all items.
    rank = rng.permutation(n_items)
    weight = (rank + 1.0) ** -ZIPF_ALPHA

    # Cold items: never the most popular item of its topic, so every topic keeps one warm item.
    n_cold = max(1, int(round(COLD_FRACTION * n_items)))
    order = np.lexsort((rank, topic))  # by topic, then by popularity rank
    first_of_topic = np.ones(n_items, dtype=bool)
    first_of_topic[order[1:]] = topic[order[1:]] != topic[order[:-1]]
    head = np.zeros(n_items, dtype=bool)
    head[order] = first_of_topic
    candidates = np.flatnonzero(~head)
    cold = np.zeros(n_items, dtype=bool)
    cold[rng.choice(candidates, size=n_cold, replace=False)] = True
    weight[cold] = 0.0
    return _Items(item_id=ids, domain=domains, topic=topic, weight=weight, cold=cold)


def _price(domain: str, rng: np.random.Generator) -> float:
    if domain == "film":
        return float(rng.choice([2.99, 3.99, 4.99, 9.99, 14.99]))
    if domain == "track":
        return float(rng.choice([0.99, 1.29, 1.49]))
    return round(float(np.clip(rng.lognormal(math.log(40.0), 0.8), 4.0, 500.0)), 2)


def _build_content(
    items: _Items, seed: int, images_dir: Path, audio_dir: Path, progress: bool
) -> pl.DataFrame:
    """Write images and audio, return the catalog table."""
    n = len(items.item_id)
    titles: list[str] = []
    descriptions: list[str] = []
    image_paths: list[str | None] = []
    audio_paths: list[str | None] = []
    prices: list[float] = []
    created = np.empty(n, dtype=np.int64)
    meta_rng = _child_rng(seed, 2)
    warm_age = meta_rng.integers(86_400, 3 * 365 * 86_400, size=n)
    cold_delay = meta_rng.integers(3_600, 3 * 86_400, size=n)
    created[:] = np.where(items.cold, EPOCH + WINDOW_S + cold_delay, EPOCH - warm_age)

    with progress_bar(total=n, show=progress, desc="demo items", unit="item") as bar:
        for i, (item_id, domain) in enumerate(zip(items.item_id, items.domain)):
            rng = _child_rng(seed, 3, i)
            topic = TOPICS[int(items.topic[i])].split(":", 1)[1]
            image_path: str | None = None
            audio_path: str | None = None
            if domain == "film":
                title, description = film_text(topic, rng)
            elif domain == "product":
                title, description, _ = product_text(rng)
                img = render_product(topic, rng)
                write_bytes_atomic(images_dir / f"{item_id}.png", png_bytes(img))
                image_path = f"{images_dir.name}/{item_id}.png"
            else:
                title, description = track_text(rng)
                samples = render_track(topic, rng)
                write_bytes_atomic(audio_dir / f"{item_id}.wav", wav_bytes(samples))
                audio_path = f"{audio_dir.name}/{item_id}.wav"
            titles.append(title)
            descriptions.append(description)
            image_paths.append(image_path)
            audio_paths.append(audio_path)
            prices.append(_price(domain, rng))
            bar.update(1)

    return pl.DataFrame(
        {
            "item_id": items.item_id,
            "title": titles,
            "description": descriptions,
            "image_path": image_paths,
            "audio_path": audio_paths,
            "domain": items.domain,
            "price": prices,
            "created_at": created,
        },
        schema={
            "item_id": pl.String,
            "title": pl.String,
            "description": pl.String,
            "image_path": pl.String,
            "audio_path": pl.String,
            "domain": pl.String,
            "price": pl.Float64,
            "created_at": pl.Int64,
        },
    )


# --------------------------------------------------------------------------- users


def _top_k_weighted(rng: np.random.Generator, weights: np.ndarray, k: int) -> np.ndarray:
    """Indices of ``k`` draws without replacement, probability proportional to ``weights``.

    Uses the Gumbel top-k trick; indices with zero weight are never drawn, so
    fewer than ``k`` indices come back when fewer than ``k`` weights are positive.
    """
    positive = np.flatnonzero(weights > 0)
    k = min(k, len(positive))
    if k <= 0:
        return np.empty(0, dtype=np.int64)
    keys = np.log(weights[positive]) + rng.gumbel(size=len(positive))
    top = np.argpartition(-keys, k - 1)[:k]
    return positive[top[np.argsort(-keys[top], kind="stable")]]


def _user_counts(rng: np.random.Generator, n_users: int) -> np.ndarray:
    """Events per user: lognormal body in [15, 200] (mean about 60) plus some 5-10 sparse users."""
    counts = np.clip(np.rint(rng.lognormal(math.log(54.0), 0.65, size=n_users)), 15, 200)
    sparse = rng.random(n_users) < SPARSE_USER_FRACTION
    counts[sparse] = rng.integers(5, 11, size=int(sparse.sum()))
    return counts.astype(np.int64)


def _timestamps(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` strictly increasing int seconds inside the window, in sessions with random gaps."""
    start = rng.uniform(0.0, 0.3 * WINDOW_S)
    end = rng.uniform(0.7 * WINDOW_S, WINDOW_S - 60.0)
    new_session = rng.random(n) < 0.2
    gaps = np.where(new_session, rng.exponential(86_400.0, n), 5.0 + rng.exponential(90.0, n))
    gaps[0] = 0.0
    raw = np.cumsum(gaps)
    total = raw[-1] if raw[-1] > 0 else 1.0
    ts = EPOCH + np.floor(start + raw * (end - start) / total).astype(np.int64)
    k = np.arange(n, dtype=np.int64)
    return np.maximum.accumulate(ts - k) + k  # force strictly increasing


def _build_users(
    items: _Items, n_users: int, seed: int, prices: np.ndarray, progress: bool
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Plant user tastes and simulate their interactions; returns (interactions, user_tastes)."""
    rng = _child_rng(seed, 4)
    width = max(4, len(str(n_users)))
    user_ids = [f"u{u:0{width}d}" for u in range(1, n_users + 1)]
    n_topics = len(TOPICS)
    counts = _user_counts(rng, n_users)
    topic_members = [np.flatnonzero(items.topic == t) for t in range(n_topics)]
    item_ids = np.asarray(items.item_id, dtype=object)

    taste_users: list[str] = []
    taste_topics: list[str] = []
    cols: dict[str, list[np.ndarray]] = {"user": [], "item": [], "ts": [], "event": [], "value": []}
    with progress_bar(total=n_users, show=progress, desc="demo users", unit="user") as bar:
        for u in range(n_users):
            urng = _child_rng(seed, 5, u)
            n_fav_topics = int(urng.choice([2, 3], p=[0.5, 0.5]))
            favs = np.sort(urng.choice(n_topics, size=n_fav_topics, replace=False))
            taste_users += [user_ids[u]] * n_fav_topics
            taste_topics += [TOPICS[int(t)] for t in favs]

            n = int(counts[u])
            n_fav = int(urng.binomial(n, FAVOURITE_PROB))
            per_topic = urng.multinomial(n_fav, urng.dirichlet(np.full(n_fav_topics, 2.0)))
            # Favourite topics first; a topic with too few items leaves the rest of
            # its share to global popularity, so users do not repeat items.
            chosen = [
                topic_members[int(t)][_top_k_weighted(urng, items.weight[topic_members[int(t)]], int(k))]
                for t, k in zip(favs, per_topic)
            ]
            fav_items = np.concatenate(chosen)
            w_global = items.weight.copy()
            w_global[fav_items] = 0.0
            glob_items = _top_k_weighted(urng, w_global, n - len(fav_items))
            n_more = n - len(fav_items) - len(glob_items)
            if n_more > 0:  # the whole warm catalog is used up: re-consume by popularity
                warm = np.flatnonzero(items.weight > 0)
                p = items.weight[warm] / items.weight[warm].sum()
                glob_items = np.concatenate([glob_items, urng.choice(warm, size=n_more, p=p)])
            seq = np.concatenate([fav_items, glob_items]).astype(np.int64)
            is_fav = np.concatenate([np.ones(len(fav_items), bool), np.zeros(len(glob_items), bool)])
            perm = urng.permutation(len(seq))
            seq, is_fav = seq[perm], is_fav[perm]
            m = len(seq)

            u_fav, u_glob = urng.random(m), urng.random(m)
            ev_fav = np.searchsorted(np.cumsum(FUNNEL_FAVOURITE), u_fav * FUNNEL_FAVOURITE.sum())
            ev_glob = np.searchsorted(np.cumsum(FUNNEL_GLOBAL), u_glob * FUNNEL_GLOBAL.sum())
            ev = np.minimum(np.where(is_fav, ev_fav, ev_glob), len(EVENTS) - 1)
            value = np.where(ev == 3, prices[seq], 1.0)

            cols["user"].append(np.full(m, u, dtype=np.int64))
            cols["item"].append(seq)
            cols["ts"].append(_timestamps(urng, m))
            cols["event"].append(ev)
            cols["value"].append(value)
            bar.update(1)

    user_idx = np.concatenate(cols["user"])
    item_idx = np.concatenate(cols["item"])
    ev_idx = np.concatenate(cols["event"])
    interactions = pl.DataFrame(
        {
            "user_id": np.asarray(user_ids, dtype=object)[user_idx].tolist(),
            "item_id": item_ids[item_idx].tolist(),
            "timestamp": np.concatenate(cols["ts"]),
            "event": np.asarray(EVENTS, dtype=object)[ev_idx].tolist(),
            "value": np.concatenate(cols["value"]),
        },
        schema={
            "user_id": pl.String,
            "item_id": pl.String,
            "timestamp": pl.Int64,
            "event": pl.String,
            "value": pl.Float64,
        },
    ).sort(["timestamp", "user_id"], maintain_order=True)
    tastes = pl.DataFrame(
        {"user_id": taste_users, "topic": taste_topics},
        schema={"user_id": pl.String, "topic": pl.String},
    )
    return interactions, tastes


# --------------------------------------------------------------------------- entry point


def generate_demo(
    out_dir: Path,
    n_items: int = 2000,
    n_users: int = 1000,
    seed: int = 0,
    progress: bool = True,
) -> DemoFiles:
    """Generate the demo catalog, interactions, media files and planted truth.

    Args:
        out_dir: Folder to write into (created if missing). Existing files of
            the same names are replaced.
        n_items: Number of catalog items (at least 48): about 40 % films,
            30 % products (PNG image), 30 % music tracks (WAV audio).
        n_users: Number of users (at least 1).
        seed: Random seed. The same seed gives byte-identical files.
        progress: Show tqdm progress bars.

    Returns:
        The paths of what was written, as a :class:`DemoFiles`.

    Raises:
        ValueError: If ``n_items`` or ``n_users`` is too small.
    """
    if int(n_items) < MIN_ITEMS:
        raise UsageError(f"n_items must be at least {MIN_ITEMS} (two items per topic), got {n_items}")
    if int(n_users) < 1:
        raise UsageError(f"n_users must be at least 1, got {n_users}")
    n_items, n_users, seed = int(n_items), int(n_users), int(seed)

    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    files = DemoFiles(
        catalog=out_dir / "catalog.parquet",
        interactions=out_dir / "interactions.parquet",
        images_dir=out_dir / "images",
        audio_dir=out_dir / "audio",
        truth=out_dir / "truth",
    )
    for d in (out_dir, files.images_dir, files.audio_dir, files.truth):
        d.mkdir(parents=True, exist_ok=True)
    logger.info("generating demo data in %s: %d items, %d users, seed %d", out_dir, n_items, n_users, seed)

    items = _plan_items(n_items, seed)
    catalog = _build_content(items, seed, files.images_dir, files.audio_dir, progress)
    interactions, tastes = _build_users(
        items, n_users, seed, catalog["price"].to_numpy(), progress
    )
    item_topics = pl.DataFrame(
        {
            "item_id": items.item_id,
            "domain": items.domain,
            "topic": [TOPICS[int(t)] for t in items.topic],
        },
        schema={"item_id": pl.String, "domain": pl.String, "topic": pl.String},
    )

    # Truth first, then interactions, catalog last: a present catalog means a complete run.
    write_parquet_atomic(item_topics, files.truth / "item_topics.parquet")
    write_parquet_atomic(tastes, files.truth / "user_tastes.parquet")
    write_parquet_atomic(interactions, files.interactions)
    write_parquet_atomic(catalog, files.catalog)

    n_touched = interactions["item_id"].n_unique()
    logger.info(
        "demo data ready in %.1f s: %d items (%d without interactions), %d users, %d interactions",
        time.perf_counter() - t0,
        n_items,
        n_items - n_touched,
        n_users,
        interactions.height,
    )
    return files

"""Tests of the built-in demo dataset generator (services/demo_catalog/).

Small sizes keep the run fast; the signal checks use a mid-size run
(the default 2000 items, 300 users, about two seconds) so that each topic has enough items.
"""

from __future__ import annotations

import re
import wave
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from PIL import Image

from tlrec.services.demo_catalog import (
    EPOCH,
    IMAGE_SIZE,
    PRODUCT_TOPICS,
    SAMPLE_RATE,
    TOPICS,
    TRACK_TOPICS,
    WINDOW_S,
    DemoFiles,
    generate_demo,
)

SMALL = {"n_items": 120, "n_users": 60}
MID = {"n_items": 2000, "n_users": 300}


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> DemoFiles:
    return generate_demo(tmp_path_factory.mktemp("small"), **SMALL, seed=7, progress=False)


@pytest.fixture(scope="module")
def mid(tmp_path_factory: pytest.TempPathFactory) -> DemoFiles:
    return generate_demo(tmp_path_factory.mktemp("mid"), **MID, seed=3, progress=False)


def _read(files: DemoFiles) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    return (
        pl.read_parquet(files.catalog),
        pl.read_parquet(files.interactions),
        pl.read_parquet(files.truth / "item_topics.parquet"),
        pl.read_parquet(files.truth / "user_tastes.parquet"),
    )


def _read_wav(path: Path) -> np.ndarray:
    with wave.open(str(path)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, SAMPLE_RATE)
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float64)


# --------------------------------------------------------------------------- determinism


def test_same_seed_gives_identical_files(tmp_path: Path, small: DemoFiles) -> None:
    again = generate_demo(tmp_path / "again", **SMALL, seed=7, progress=False)
    for name in ("catalog", "interactions"):
        assert getattr(again, name).read_bytes() == getattr(small, name).read_bytes()
    for name in ("item_topics.parquet", "user_tastes.parquet"):
        assert (again.truth / name).read_bytes() == (small.truth / name).read_bytes()
    catalog = pl.read_parquet(small.catalog)
    media = catalog["image_path"].drop_nulls().to_list()[:5] + catalog["audio_path"].drop_nulls().to_list()[:5]
    assert len(media) == 10
    root_a, root_b = small.catalog.parent, again.catalog.parent
    for rel in media:
        assert (root_a / rel).read_bytes() == (root_b / rel).read_bytes(), rel


def test_other_seed_gives_other_data(tmp_path: Path, small: DemoFiles) -> None:
    other = generate_demo(tmp_path / "other", **SMALL, seed=8, progress=False)
    assert not pl.read_parquet(other.interactions).equals(pl.read_parquet(small.interactions))
    assert not pl.read_parquet(other.catalog).equals(pl.read_parquet(small.catalog))


def test_interrupted_run_leaves_no_half_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tlrec.services.demo_catalog.world as demo

    real = demo.render_track
    calls = {"n": 0}

    def flaky(topic: str, rng: np.random.Generator) -> np.ndarray:
        calls["n"] += 1
        if calls["n"] > 5:
            raise KeyboardInterrupt
        return real(topic, rng)

    monkeypatch.setattr(demo, "render_track", flaky)
    with pytest.raises(KeyboardInterrupt):
        generate_demo(tmp_path, **SMALL, progress=False)
    assert not (tmp_path / "catalog.parquet").exists()
    assert not (tmp_path / "interactions.parquet").exists()
    assert [p for p in tmp_path.rglob("*") if p.name.startswith(".")] == []
    assert len(list((tmp_path / "audio").glob("*.wav"))) == 5


def test_rejects_too_small_sizes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="n_items"):
        generate_demo(tmp_path, n_items=10, n_users=5, progress=False)
    with pytest.raises(ValueError, match="n_users"):
        generate_demo(tmp_path, n_items=60, n_users=0, progress=False)


# --------------------------------------------------------------------------- schema and contracts


def test_layout_and_no_temp_files_left(small: DemoFiles) -> None:
    root = small.catalog.parent
    assert small.catalog == root / "catalog.parquet"
    assert small.interactions == root / "interactions.parquet"
    assert small.images_dir == root / "images" and small.audio_dir == root / "audio"
    assert small.truth == root / "truth"
    leftovers = [p for p in root.rglob("*") if p.name.startswith(".") or p.suffix == ".tmp"]
    assert leftovers == []


def test_catalog_schema(small: DemoFiles) -> None:
    catalog = pl.read_parquet(small.catalog)
    assert catalog.columns[:6] == ["item_id", "title", "description", "image_path", "audio_path", "domain"]
    for col in ("item_id", "title", "description", "image_path", "audio_path", "domain"):
        assert catalog.schema[col] == pl.String, col
    assert catalog.schema["created_at"] == pl.Int64
    assert catalog.height == SMALL["n_items"]
    assert catalog["item_id"].n_unique() == catalog.height
    assert catalog.select(pl.col("item_id", "title", "description", "domain").null_count()).sum_horizontal()[0] == 0
    # no column gives the topic away
    assert not any("topic" in c for c in catalog.columns)
    counts = dict(catalog.group_by("domain").len().iter_rows())
    assert counts == {"film": 48, "product": 36, "track": 36}
    prefixes = {"film": r"film-\d{4}", "product": r"prod-\d{4}", "track": r"track-\d{4}"}
    for item_id, domain in catalog.select("item_id", "domain").iter_rows():
        assert re.fullmatch(prefixes[domain], item_id)


def test_each_domain_uses_its_modality(small: DemoFiles) -> None:
    catalog = pl.read_parquet(small.catalog)
    root = small.catalog.parent
    films = catalog.filter(pl.col("domain") == "film")
    assert films["image_path"].null_count() == films.height
    assert films["audio_path"].null_count() == films.height
    assert films["description"].n_unique() == films.height  # not identical strings

    prods = catalog.filter(pl.col("domain") == "product")
    assert prods["image_path"].null_count() == 0 and prods["audio_path"].null_count() == prods.height
    for rel in prods["image_path"]:
        assert not Path(rel).is_absolute() and rel.startswith("images/")
        with Image.open(root / rel) as img:
            assert img.format == "PNG" and img.mode == "RGB" and img.size == (IMAGE_SIZE, IMAGE_SIZE)

    tracks = catalog.filter(pl.col("domain") == "track")
    assert tracks["audio_path"].null_count() == 0 and tracks["image_path"].null_count() == tracks.height
    for rel in tracks["audio_path"]:
        assert not Path(rel).is_absolute() and rel.startswith("audio/")
        samples = _read_wav(root / rel)
        assert abs(len(samples) / SAMPLE_RATE - 1.5) < 0.01
        assert 0.2 * 32767 < np.abs(samples).max() <= 32767


def test_product_and_track_text_is_topic_free(small: DemoFiles) -> None:
    catalog, _, item_topics, _ = _read(small)
    df = catalog.join(item_topics, on=["item_id", "domain"]).filter(pl.col("domain") != "film")
    words = re.compile(r"[a-z]+")
    topic_words = {w for t in PRODUCT_TOPICS + TRACK_TOPICS for w in t.split(":")[1].split("_")}
    for title, desc in df.select("title", "description").iter_rows():
        text_words = set(words.findall(f"{title} {desc}".lower()))
        assert not text_words & topic_words, (title, desc)
    assert all(re.fullmatch(r"Track \d{4}", t) for t in df.filter(pl.col("domain") == "track")["title"])


def test_interactions_schema_and_order(small: DemoFiles) -> None:
    catalog, inter, _, tastes = _read(small)
    assert inter.schema == pl.Schema(
        {"user_id": pl.String, "item_id": pl.String, "timestamp": pl.Int64, "event": pl.String, "value": pl.Float64}
    )
    assert inter.null_count().sum_horizontal()[0] == 0
    assert inter.equals(inter.sort(["timestamp", "user_id"], maintain_order=True))
    assert set(inter["item_id"].unique()) <= set(catalog["item_id"])
    assert set(catalog["item_id"]) - set(inter["item_id"])  # some items are cold
    assert inter["user_id"].n_unique() == SMALL["n_users"]
    assert set(inter["user_id"].unique()) == set(tastes["user_id"].unique())
    assert set(inter["event"].unique()) == {"view", "click", "cart", "purchase"}
    ts = inter["timestamp"]
    assert EPOCH <= ts.min() and ts.max() < EPOCH + WINDOW_S
    # each user's events strictly increase in time
    per_user = inter.group_by("user_id").agg(pl.col("timestamp").diff().min().alias("gap"))
    assert per_user["gap"].drop_nulls().min() > 0
    # a funnel: views dominate, purchases are rarest and carry a price
    counts = dict(inter.group_by("event").len().iter_rows())
    assert counts["view"] > counts["click"] > counts["purchase"]
    assert (inter.filter(pl.col("event") != "purchase")["value"] == 1.0).all()
    assert (inter.filter(pl.col("event") == "purchase")["value"] > 0).all()


def test_cold_items_and_activity(mid: DemoFiles) -> None:
    catalog, inter, _, _ = _read(mid)
    never = set(catalog["item_id"]) - set(inter["item_id"])
    # the planted cold items are new (created after the log ends) and never interacted with
    new = set(catalog.filter(pl.col("created_at") >= EPOCH + WINDOW_S)["item_id"])
    assert 0.03 * catalog.height <= len(new) <= 0.08 * catalog.height
    assert new <= never
    assert len(never) <= 0.08 * catalog.height  # few warm items go unseen by chance
    assert {i.split("-")[0] for i in new} == {"film", "prod", "track"}
    per_user = inter.group_by("user_id").len()["len"]
    assert per_user.min() >= 5 and per_user.max() <= 200
    assert 40 <= per_user.mean() <= 80
    assert (per_user <= 10).sum() >= 1  # some sparse users
    repeats = inter.height - inter.select("user_id", "item_id").n_unique()
    assert repeats / inter.height < 0.02


def test_truth_tables(small: DemoFiles) -> None:
    catalog, _, item_topics, tastes = _read(small)
    assert item_topics.columns == ["item_id", "domain", "topic"]
    assert tastes.columns == ["user_id", "topic"]
    assert item_topics.select("item_id", "domain").equals(catalog.select("item_id", "domain"))
    assert set(item_topics["topic"]) == set(TOPICS) and len(TOPICS) == 24
    for domain, topic in item_topics.select("domain", "topic").iter_rows():
        assert topic.startswith(f"{domain}:")
    n_tastes = tastes.group_by("user_id").len()["len"]
    assert n_tastes.min() >= 2 and n_tastes.max() <= 3
    assert set(tastes["topic"]) <= set(TOPICS)


# --------------------------------------------------------------------------- planted behavioural signal


def _with_topics(files: DemoFiles) -> tuple[pl.DataFrame, pl.DataFrame]:
    _, inter, item_topics, tastes = _read(files)
    return inter.join(item_topics.select("item_id", "topic"), on="item_id"), tastes


def test_users_favour_their_planted_topics(mid: DemoFiles) -> None:
    inter, tastes = _with_topics(mid)
    fav = inter.join(tastes.with_columns(pl.lit(True).alias("fav")), on=["user_id", "topic"], how="left")
    share = fav.group_by("user_id").agg(pl.col("fav").fill_null(False).mean().alias("share"))
    # chance: share of all interactions that fall in the user's topics
    topic_share = inter.group_by("topic").len().with_columns(pl.col("len") / inter.height)
    chance = tastes.join(topic_share, on="topic").group_by("user_id").agg(pl.col("len").sum().alias("chance"))
    df = share.join(chance, on="user_id")
    assert df["share"].mean() > 0.65
    assert df["chance"].mean() < 0.2
    assert (df["share"] > 2 * df["chance"]).mean() > 0.9


def test_same_topic_items_cooccur(mid: DemoFiles) -> None:
    inter, _ = _with_topics(mid)
    counts = inter.group_by("user_id", "topic").len()["len"].to_numpy().astype(float)
    per_user = inter.group_by("user_id").len()["len"].to_numpy().astype(float)
    same_pairs = (counts * (counts - 1) / 2).sum()
    all_pairs = (per_user * (per_user - 1) / 2).sum()
    p = (inter.group_by("topic").len()["len"].to_numpy() / inter.height).astype(float)
    expected = (p**2).sum()  # same-topic share of pairs if users ignored topics
    assert same_pairs / all_pairs > 3 * expected


def test_temporal_split_is_learnable(mid: DemoFiles) -> None:
    inter, _ = _with_topics(mid)
    ranked = inter.sort("user_id", "timestamp").with_columns(
        (pl.int_range(pl.len()).over("user_id") / pl.len().over("user_id")).alias("pos")
    )
    train = ranked.filter(pl.col("pos") < 0.8)
    test = ranked.filter(pl.col("pos") >= 0.8)
    top = (
        train.group_by("user_id", "topic")
        .len()
        .sort(["user_id", "len", "topic"], descending=[False, True, False])
        .group_by("user_id", maintain_order=True)
        .head(3)
        .with_columns(pl.lit(True).alias("hit"))
    )
    hits = test.join(top.select("user_id", "topic", "hit"), on=["user_id", "topic"], how="left")
    assert hits["hit"].fill_null(False).mean() > 0.55  # chance is about 3/24


# --------------------------------------------------------------------------- content separates topics


def _topic_groups(files: DemoFiles, domain: str) -> dict[str, list[str]]:
    catalog, _, item_topics, _ = _read(files)
    col = {"film": "description", "product": "image_path", "track": "audio_path"}[domain]
    df = catalog.join(item_topics, on=["item_id", "domain"]).filter(pl.col("domain") == domain)
    return {t: g[col].to_list() for (t,), g in df.group_by("topic", maintain_order=True)}


def _nearest_centroid_accuracy(features: dict[str, np.ndarray]) -> float:
    """Split each topic's items in halves: centroids from one, accuracy on the other."""
    topics = sorted(features)
    centroids = np.stack([features[t][::2].mean(0) for t in topics])
    scale = np.concatenate([features[t] for t in topics]).std(0) + 1e-9
    correct = total = 0
    for k, t in enumerate(topics):
        held = features[t][1::2]
        d = (((held[:, None, :] - centroids[None]) / scale) ** 2).sum(-1)
        correct += int((d.argmin(1) == k).sum())
        total += len(held)
    return correct / total


def _image_features(path: Path) -> np.ndarray:
    px = np.asarray(Image.open(path).convert("RGB"), dtype=np.float64) / 255.0
    grey = px.mean(-1)
    sat = px.max(-1) - px.min(-1)
    fg = sat > 0.35  # coloured foreground
    fg_rgb = px[fg].mean(0) if fg.any() else np.zeros(3)
    return np.concatenate(
        [
            fg_rgb,
            [fg.mean(), (grey < 0.35).mean()],
            [np.abs(np.diff(grey, axis=0)).mean(), np.abs(np.diff(grey, axis=1)).mean()],
        ]
    )


def test_images_show_their_topic(mid: DemoFiles) -> None:
    root = mid.catalog.parent
    groups = _topic_groups(mid, "product")
    feats = {t: np.stack([_image_features(root / p) for p in paths]) for t, paths in groups.items()}
    assert _nearest_centroid_accuracy(feats) > 0.8  # chance is 1/8
    # a few plain facts: reds are red, blues are blue, stripes are horizontal
    red = feats["product:red_circles"][:, :3].mean(0)
    blue = feats["product:blue_stripes"][:, :3].mean(0)
    assert red[0] > red[2] + 0.3 and blue[2] > blue[0] + 0.3
    stripes = feats["product:blue_stripes"]
    assert (stripes[:, -2] > 2 * stripes[:, -1]).all()  # vertical gradient >> horizontal
    assert feats["product:black_crosses"][:, 4].mean() > 0.05  # dark pixels


def _dominant_frequency(samples: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.argmax(spectrum) * SAMPLE_RATE / len(samples))


def test_audio_pitch_register_follows_topic(mid: DemoFiles) -> None:
    root = mid.catalog.parent
    groups = _topic_groups(mid, "track")
    medians = {
        t: float(np.median([_dominant_frequency(_read_wav(root / p)) for p in paths]))
        for t, paths in groups.items()
    }
    # TRACK_TOPICS is ordered from low to high register
    ordered = [medians[t] for t in TRACK_TOPICS]
    assert ordered == sorted(ordered), medians
    assert medians["track:low_sine_drone"] < 100 and medians["track:high_sine_bells"] > 1000
    lows = [m for t, m in medians.items() if ":low_" in t]
    highs = [m for t, m in medians.items() if ":high_" in t]
    assert max(lows) * 4 < min(highs)


def test_film_descriptions_share_vocabulary_within_topic(mid: DemoFiles) -> None:
    groups = _topic_groups(mid, "film")
    tokenize = re.compile(r"[a-z]+")
    stop = {"a", "an", "the", "of", "in", "and", "to", "who", "it", "its", "is", "with", "by", "at", "on"}

    def bag(text: str) -> set[str]:
        return set(tokenize.findall(text.lower())) - stop

    labelled = [(t, bag(d)) for t, descs in groups.items() for d in descs]
    within, across = [], []
    for i, (ti, wi) in enumerate(labelled):
        for tj, wj in labelled[i + 1 :]:
            jac = len(wi & wj) / max(1, len(wi | wj))
            (within if ti == tj else across).append(jac)
    assert np.mean(within) > 2.5 * np.mean(across)
    # and a nearest-neighbour by word overlap finds the right topic
    hits = 0
    for i, (ti, wi) in enumerate(labelled):
        best = max((len(wi & wj) / max(1, len(wi | wj)), tj) for j, (tj, wj) in enumerate(labelled) if j != i)
        hits += best[1] == ti
    assert hits / len(labelled) > 0.8

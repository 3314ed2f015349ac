"""Built-in demo dataset: a synthetic multi-modal catalog with planted topics.

``generate_demo`` writes a small but realistic-looking shop in three domains,
one per modality, so that every encoder of tlrec has something to find:

* **films** (about 40 % of items, ``film-0001`` ...): title and description
  text drawn from per-topic vocabularies (8 genres). No image or audio.
* **products** (about 30 %, ``prod-0001`` ...): a 96x96 RGB PNG whose shape and
  colour family carry the topic (8 topics, e.g. red circles, blue stripes).
  Their text is generic ("Norvik X-204") and says nothing about the topic.
* **music tracks** (about 30 %, ``track-0001`` ...): a 1.5 s mono 16 kHz
  int16 WAV whose pitch register and timbre/rhythm carry the topic (8 topics,
  e.g. low sine drone, high square arpeggio). Text is generic too.

Users (``u0001`` ...) each have 2-3 favourite topics out of the 24 (they may
span domains). About 75 % of a user's events hit a favourite topic (the item
chosen by Zipf-like popularity within the topic), the rest follow global
popularity. Tastes are stationary, so a per-user temporal split is learnable.
About 5 % of items are "new" (created after the log ends) and never
interacted with: the cold-start case.

The ground truth (item topics, user tastes) is written to ``truth/`` and never
to the catalog. Everything is deterministic in ``seed``: two runs produce
byte-identical files. Nothing is downloaded. Every file is written under a
temporary name and moved into place with :func:`os.replace`, so an interrupted
run never leaves a half-written file; the catalog and interactions are
written last.

Layout of ``out_dir``::

    catalog.parquet        item_id, title, description, image_path, audio_path,
                           domain, price, created_at
    interactions.parquet   user_id, item_id, timestamp, event, value
    images/prod-0001.png   ...
    audio/track-0001.wav   ...
    truth/item_topics.parquet   item_id, domain, topic
    truth/user_tastes.parquet   user_id, topic
"""

from __future__ import annotations

import colorsys
import io
import logging
import math
import os
import time
import wave
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
from PIL import Image, ImageDraw
from tqdm.auto import tqdm

__all__ = [
    "AUDIO_DURATION_S",
    "DOMAINS",
    "EPOCH",
    "FILM_TOPICS",
    "IMAGE_SIZE",
    "PRODUCT_TOPICS",
    "SAMPLE_RATE",
    "TOPICS",
    "TRACK_TOPICS",
    "WINDOW_S",
    "DemoFiles",
    "generate_demo",
]

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------- constants

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
_DOMAIN_SHARE = {"film": 0.4, "product": 0.3, "track": 0.3}
_ID_PREFIX = {"film": "film", "product": "prod", "track": "track"}

# Event funnel per kind of event: (view, click, cart, purchase).
_EVENTS: tuple[str, ...] = ("view", "click", "cart", "purchase")
_FUNNEL_FAVOURITE = np.array([0.74, 0.14, 0.07, 0.05])
_FUNNEL_GLOBAL = np.array([0.88, 0.08, 0.03, 0.01])

# --------------------------------------------------------------------------- films

_FILM_VOCAB: dict[str, dict[str, list[str]]] = {
    "space_scifi": {
        "hero": ["astronaut", "starship captain", "rogue pilot", "android engineer",
                 "stranded cosmonaut", "young star navigator"],
        "place": ["a distant space station", "the rings of Saturn", "a derelict starship",
                  "a frozen alien moon", "the edge of the galaxy", "an orbital colony on Mars"],
        "threat": ["an alien armada", "a failing fusion reactor", "a rogue artificial intelligence",
                   "a collapsing wormhole", "a storm of meteors"],
        "goal": ["reach the wormhole before the oxygen runs out", "warn Earth of an alien invasion",
                 "repair the hyperdrive", "decode a signal from deep space",
                 "pilot the spaceship home"],
        "theme": ["interstellar travel", "first contact with aliens", "zero gravity",
                  "time dilation", "lost civilizations among the stars", "spaceships and lasers"],
        "mood": ["awe-inspiring", "cerebral", "epic", "futuristic"],
        "genre": ["space opera", "sci-fi adventure", "science fiction thriller"],
        "title_a": ["Dark", "Silent", "Distant", "Infinite", "Stellar", "Cosmic"],
        "title_n": ["Orbit", "Nebula", "Starfall", "Eclipse", "Void", "Comet", "Galaxy", "Asteroid"],
    },
    "romantic_comedy": {
        "hero": ["hopeless romantic", "wedding planner", "clumsy barista", "charming florist",
                 "jilted bride", "lovesick bookseller"],
        "place": ["a sunny cafe in Paris", "a small-town bakery", "a chaotic wedding weekend",
                  "a cramped New York apartment", "a seaside hotel in Italy"],
        "threat": ["a disastrous first date", "a fake engagement", "an awkward love triangle",
                   "a meddling ex-boyfriend", "a mix-up of love letters"],
        "goal": ["win back a first love", "pretend to be a couple for a week",
                 "find true love before the wedding", "confess a secret crush",
                 "stop the wedding of the girl next door"],
        "theme": ["love", "flirting", "second chances at romance", "awkward kisses",
                  "heartbreak and laughter", "dating disasters"],
        "mood": ["charming", "witty", "heartwarming", "feel-good", "sweet"],
        "genre": ["romantic comedy", "rom-com", "love story"],
        "title_a": ["Sweet", "Accidental", "Perfect", "Lovesick", "Sunny", "Sugar"],
        "title_n": ["Kiss", "Valentine", "Sweetheart", "Proposal", "Honeymoon", "Crush", "Romance"],
    },
    "horror": {
        "hero": ["terrified babysitter", "skeptical priest", "grieving widow",
                 "group of frightened teenagers", "paranormal investigator"],
        "place": ["a haunted farmhouse", "an abandoned asylum", "a fog-covered cemetery",
                  "a cabin deep in the dark woods", "a cursed village"],
        "threat": ["a vengeful ghost", "a demonic presence", "a masked killer",
                   "something lurking in the basement", "a possessed doll", "a hungry zombie horde"],
        "goal": ["survive the night", "break an ancient curse", "escape the evil before midnight",
                 "exorcise the demon", "stay alive until dawn"],
        "theme": ["blood", "screams in the dark", "nightmares", "creeping dread", "the undead",
                  "ghosts and demons"],
        "mood": ["terrifying", "creepy", "gruesome", "bone-chilling", "scary"],
        "genre": ["horror film", "supernatural horror", "slasher", "ghost story"],
        "title_a": ["Haunted", "Cursed", "Bloody", "Wicked", "Dead", "Hollow"],
        "title_n": ["Nightmare", "Curse", "Crypt", "Possession", "Grave", "Scream", "Demon"],
    },
    "detective_mystery": {
        "hero": ["hard-boiled detective", "retired police inspector", "amateur sleuth",
                 "forensic expert", "private investigator"],
        "place": ["a rain-soaked city", "a sleepy English village", "a luxury night train",
                  "a locked manor house", "the foggy docks of London"],
        "threat": ["a string of unsolved murders", "a missing heiress", "a poisoned millionaire",
                   "a stolen diamond", "a cunning killer who leaves riddles"],
        "goal": ["unmask the murderer", "follow the clues to the killer",
                 "solve the case before the killer strikes again", "crack a perfect alibi",
                 "find out who committed the crime"],
        "theme": ["suspects and clues", "alibis", "whodunit twists", "police interrogations",
                  "murder and deception", "a detective's deductions"],
        "mood": ["suspenseful", "twisty", "intricate", "noir", "clever"],
        "genre": ["murder mystery", "detective story", "crime thriller", "whodunit"],
        "title_a": ["Hidden", "Final", "Missing", "Secret", "Crimson", "Deadly"],
        "title_n": ["Clue", "Alibi", "Witness", "Case", "Suspect", "Verdict", "Motive", "Murder"],
    },
    "nature_documentary": {
        "hero": ["wildlife photographer", "marine biologist", "family of elephants",
                 "pride of lions", "pod of migrating whales", "veteran naturalist"],
        "place": ["the African savanna", "the Amazon rainforest", "a coral reef",
                  "the Arctic tundra", "the Himalayan mountains", "the deep ocean"],
        "threat": ["climate change", "a long drought", "melting sea ice", "habitat loss",
                   "hungry predators"],
        "goal": ["follow the great migration", "document rare species",
                 "reveal the hidden life of insects", "track snow leopards through winter",
                 "film animals in their natural habitat"],
        "theme": ["wildlife", "fragile ecosystems", "animal behaviour", "the changing seasons",
                  "conservation", "birds, insects and mammals"],
        "mood": ["breathtaking", "stunning", "educational", "majestic", "beautifully filmed"],
        "genre": ["nature documentary", "wildlife documentary", "documentary series"],
        "title_a": ["Frozen", "Living", "Untamed", "Blue", "Green", "Ancient"],
        "title_n": ["Planet", "Wilderness", "Ocean", "Savanna", "Rainforest", "Earth", "Tundra"],
    },
    "western": {
        "hero": ["lone gunslinger", "weary sheriff", "outlaw cowboy", "bounty hunter",
                 "frontier rancher", "stagecoach driver"],
        "place": ["a dusty frontier town", "the Texas badlands", "a desert canyon",
                  "a lawless mining camp", "the open prairie"],
        "threat": ["a ruthless gang of outlaws", "cattle rustlers", "a corrupt railroad baron",
                   "a deadly showdown at noon", "bandits on horseback"],
        "goal": ["bring the outlaw to justice", "defend the ranch", "ride across the desert",
                 "collect the bounty", "win the duel at high noon"],
        "theme": ["revolvers and saloons", "horses", "cattle drives", "frontier justice",
                  "cowboys and sheriffs", "gunfights"],
        "mood": ["gritty", "rugged", "dusty", "hard-riding"],
        "genre": ["western", "cowboy western", "frontier tale"],
        "title_a": ["Dusty", "Lonesome", "Wild", "Golden", "Iron", "Dead Man's"],
        "title_n": ["Gulch", "Saddle", "Frontier", "Canyon", "Outlaw", "Spur", "Rider", "Mesa"],
    },
    "animated_family": {
        "hero": ["talking rabbit", "curious little robot", "brave young princess",
                 "friendly dragon", "lost puppy", "mischievous toy"],
        "place": ["a magical kingdom", "an enchanted forest", "a toy shop at night",
                  "a candy-colored island", "a village of talking animals"],
        "threat": ["a grumpy wizard", "a silly villain", "a storm that scatters the toys",
                   "a mischievous witch", "a cranky troll"],
        "goal": ["find the way home", "save the magical kingdom", "learn the value of friendship",
                 "rescue their family", "make a wish come true"],
        "theme": ["friendship", "magic", "songs", "adventure for kids", "family fun",
                  "cartoon animals"],
        "mood": ["colorful", "delightful", "funny", "whimsical", "cute"],
        "genre": ["animated adventure", "family cartoon", "animated musical"],
        "title_a": ["Little", "Magic", "Tiny", "Happy", "Sparkly", "Jolly"],
        "title_n": ["Dragon", "Bunny", "Toyland", "Wish", "Puppy", "Fairy", "Unicorn"],
    },
    "war_drama": {
        "hero": ["young soldier", "battle-weary sergeant", "field nurse", "fighter pilot",
                 "resistance fighter", "platoon commander"],
        "place": ["the trenches of the Somme", "the beaches of Normandy", "a besieged city",
                  "the jungles of Vietnam", "an occupied village", "the front line"],
        "threat": ["enemy artillery", "a brutal siege", "an ambush behind enemy lines",
                   "the horrors of combat", "a desperate retreat"],
        "goal": ["hold the bridge", "rescue a captured comrade", "survive the invasion",
                 "bring the platoon home alive", "break through the enemy lines"],
        "theme": ["sacrifice", "courage under fire", "brotherhood in arms", "the cost of war",
                  "battlefield heroism", "soldiers and generals"],
        "mood": ["harrowing", "powerful", "sombre", "moving"],
        "genre": ["war drama", "war epic", "historical war film"],
        "title_a": ["Fallen", "Brave", "Burning", "Last", "Bloodied", "Valiant"],
        "title_n": ["Battalion", "Trenches", "Siege", "Front", "Battle", "Regiment", "Valor"],
    },
}

# Sentence templates are shared by all topics: only the slot words differ.
_FILM_LEADS: tuple[str, ...] = (
    "{A_mood} {mood} {genre} about {a_hero} in {place}.",
    "In {place}, {a_hero} must {goal}.",
    "When {threat} strikes {place}, {a_hero} sets out to {goal}.",
    "This {mood} {genre} follows {a_hero} who faces {threat}.",
    "Set in {place}, the story follows {a_hero} determined to {goal}.",
    "{A_hero} confronts {threat} and tries to {goal}.",
    "{A_hero}, {threat} and {place}: {a_mood} {mood} {genre}.",
)
_FILM_MORE: tuple[str, ...] = (
    "A {mood} tale of {theme} and {theme2}.",
    "Expect {theme}, {theme2} and {threat}.",
    "Critics called it {mood} and {mood2}.",
    "Fans of the {genre} will love its {theme}.",
    "Everything changes with {threat}.",
    "The {hero} has to {goal}.",
    "Full of {theme}.",
)
_FILM_GENERIC: tuple[str, ...] = (
    "Runs {mins} minutes.",
    "Featuring an ensemble cast.",
    "Newly restored in high definition.",
    "Available with subtitles in twelve languages.",
    "Directed by {person}.",
    "Released in {year}.",
)
_ROMAN = ("II", "III", "IV")

FILM_TOPICS: tuple[str, ...] = tuple(f"film:{name}" for name in _FILM_VOCAB)

# --------------------------------------------------------------------------- products

_BRANDS: tuple[str, ...] = (
    "Norvik", "Altmo", "Brekka", "Calder", "Dovetail", "Elmsworth", "Fenwick", "Garrow",
    "Halden", "Iselin", "Juno", "Kestrel", "Lumio", "Nordell", "Orrin", "Pellam",
    "Quillon", "Rowan", "Solvik", "Tamsin", "Ulven", "Varda", "Wexford", "Zelle",
)
_PRODUCT_SENTENCES: tuple[str, ...] = (
    "A sturdy item from {brand}.",
    "Reliable everyday design by {brand}.",
    "Model {model}, made to last.",
    "A customer favourite from the {brand} range.",
    "Ships in recycled packaging.",
    "Covered by a two-year warranty.",
    "Part of the {year} collection.",
    "Designed in-house by {brand}.",
)

# --------------------------------------------------------------------------- tracks

_FIRST_NAMES: tuple[str, ...] = (
    "Ama", "Bo", "Cira", "Dax", "Eli", "Fen", "Gia", "Hal", "Ines", "Jun", "Kai", "Lea",
    "Milo", "Nia", "Oto", "Pia", "Remy", "Sol", "Tove", "Uma", "Vik", "Wren", "Yara", "Zed",
)
_LAST_NAMES: tuple[str, ...] = (
    "Lorne", "Marsh", "Okafor", "Quint", "Reyes", "Sato", "Tarn", "Vale", "Wilde", "Arden",
    "Brook", "Castell", "Dane", "Ebner", "Fox", "Greer",
)
_TRACK_SENTENCES: tuple[str, ...] = (
    "Recorded in {year}.",
    "From the album Volume {vol}.",
    "Released independently.",
    "Remastered edition.",
    "Licensed for streaming.",
)


# --------------------------------------------------------------------------- dataclass


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


# --------------------------------------------------------------------------- file helpers


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file and :func:`os.replace`."""
    tmp = _tmp_name(path)
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _atomic_write_parquet(df: pl.DataFrame, path: Path) -> None:
    """Write ``df`` as Parquet to ``path`` atomically."""
    tmp = _tmp_name(path)
    try:
        df.write_parquet(tmp, compression="zstd", statistics=True)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _child_rng(seed: int, *keys: int) -> np.random.Generator:
    """An independent, reproducible generator for ``(seed, *keys)``."""
    return np.random.default_rng([seed, *keys])


# --------------------------------------------------------------------------- text


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _person(rng: np.random.Generator) -> str:
    return f"{_pick(rng, _FIRST_NAMES)} {_pick(rng, _LAST_NAMES)}"


def _film_text(topic: str, rng: np.random.Generator) -> tuple[str, str]:
    """Title and 1-3 sentence description of a film of ``topic`` (a key of the vocabulary)."""
    v = _FILM_VOCAB[topic]
    theme, theme2 = rng.choice(v["theme"], size=2, replace=False)
    mood, mood2 = rng.choice(v["mood"], size=2, replace=False)
    hero, threat = _pick(rng, v["hero"]), _pick(rng, v["threat"])
    slots = {
        "hero": hero,
        "a_hero": f"{_article(hero)} {hero}",
        "A_hero": f"{_article(hero).capitalize()} {hero}",
        "place": _pick(rng, v["place"]),
        "threat": threat,
        "goal": _pick(rng, v["goal"]),
        "theme": str(theme),
        "theme2": str(theme2),
        "mood": str(mood),
        "mood2": str(mood2),
        "a_mood": _article(str(mood)),
        "A_mood": _article(str(mood)).capitalize(),
        "genre": _pick(rng, v["genre"]),
        "mins": str(int(rng.integers(80, 170))),
        "person": _person(rng),
        "year": str(int(rng.integers(1950, 2024))),
    }
    n_sentences = int(rng.choice([1, 2, 3], p=[0.25, 0.45, 0.30]))
    sentences = [_pick(rng, _FILM_LEADS).format(**slots)]
    extra = rng.permutation(len(_FILM_MORE))
    for k in range(n_sentences - 1):
        pool = _FILM_GENERIC if rng.random() < 0.25 else _FILM_MORE
        template = pool[int(extra[k])] if pool is _FILM_MORE else _pick(rng, pool)
        sentences.append(template.format(**slots))
    description = " ".join(s[:1].upper() + s[1:] for s in sentences)

    a, n = _pick(rng, v["title_a"]), _pick(rng, v["title_n"])
    n2 = _pick(rng, [w for w in v["title_n"] if w != n])
    style = int(rng.integers(5))
    if style == 0:
        title = f"The {a} {n}"
    elif style == 1:
        title = f"{a} {n}"
    elif style == 2:
        title = f"{n} of the {a} {n2}"
    elif style == 3:
        title = f"{a} {n}: {n2}"
    else:
        title = f"{n} {_pick(rng, _ROMAN)}" if rng.random() < 0.5 else f"The {n}"
    return title, description


def _product_text(rng: np.random.Generator) -> tuple[str, str, str]:
    """Generic, topic-free (title, description, model) of a product."""
    brand = _pick(rng, _BRANDS)
    model = f"{chr(ord('A') + int(rng.integers(26)))}-{int(rng.integers(100, 1000))}"
    slots = {"brand": brand, "model": model, "year": str(int(rng.integers(2015, 2024)))}
    n_sentences = int(rng.integers(1, 3))
    idx = rng.choice(len(_PRODUCT_SENTENCES), size=n_sentences, replace=False)
    description = " ".join(_PRODUCT_SENTENCES[int(i)].format(**slots) for i in idx)
    return f"{brand} {model}", description, model


def _track_text(rng: np.random.Generator) -> tuple[str, str]:
    """Generic, topic-free (title, description) of a music track."""
    number = f"{int(rng.integers(1, 10_000)):04d}"
    artist = _person(rng)
    description = f"Track {number} by {artist}."
    if rng.random() < 0.6:
        slots = {"year": str(int(rng.integers(1990, 2024))), "vol": str(int(rng.integers(1, 9)))}
        description += " " + _pick(rng, _TRACK_SENTENCES).format(**slots)
    return f"Track {number}", description


# --------------------------------------------------------------------------- images

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


def _render_product(topic: str, rng: np.random.Generator) -> Image.Image:
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


def _png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


# --------------------------------------------------------------------------- audio

_N_SAMPLES = int(round(SAMPLE_RATE * AUDIO_DURATION_S))
_Note = tuple[float, float, float]  # start s, duration s, frequency Hz


def _osc(kind: str, phase: np.ndarray) -> np.ndarray:
    if kind == "sine":
        return np.sin(phase)
    frac = (phase / (2 * np.pi)) % 1.0
    saw = 2.0 * frac - 1.0
    if kind == "saw":
        return saw
    if kind == "square":
        return np.where(frac < 0.5, 1.0, -1.0)
    if kind == "triangle":
        return 2.0 * np.abs(saw) - 1.0
    raise ValueError(f"unknown oscillator {kind!r}; allowed: sine, saw, square, triangle")


def _semi(f0: float, semitones: float) -> float:
    return f0 * 2.0 ** (semitones / 12.0)


def _sequence(starts: np.ndarray, dur: float, freqs: Sequence[float]) -> list[_Note]:
    return [(float(s), dur, float(f)) for s, f in zip(starts, freqs)]


def _notes_low_drone(rng: np.random.Generator) -> tuple[list[_Note], str]:
    return [(0.0, AUDIO_DURATION_S, rng.uniform(65, 90))], "legato"


def _notes_low_pulse(rng: np.random.Generator) -> tuple[list[_Note], str]:
    f0, step = rng.uniform(98, 125), 60.0 / rng.uniform(110, 160) / 2
    starts = np.arange(rng.uniform(0, 0.05), AUDIO_DURATION_S - 0.05, step)
    return _sequence(starts, step * rng.uniform(0.4, 0.6), [f0] * len(starts)), "pluck"


def _notes_walk(rng: np.random.Generator) -> tuple[list[_Note], str]:
    f0, step = rng.uniform(140, 175), 60.0 / rng.uniform(90, 130)
    degrees = np.array([0, 2, 3, 5, 7])
    starts = np.arange(0.0, AUDIO_DURATION_S, step)
    idx = np.clip(np.cumsum(rng.integers(-1, 2, size=len(starts))) + 1, 0, len(degrees) - 1)
    return _sequence(starts, step, [_semi(f0, degrees[i]) for i in idx]), "legato"


def _notes_mid_pulse(rng: np.random.Generator) -> tuple[list[_Note], str]:
    f0, step = rng.uniform(220, 280), rng.uniform(0.09, 0.14)
    starts = np.arange(rng.uniform(0, 0.04), AUDIO_DURATION_S - 0.04, step)
    return _sequence(starts, step * rng.uniform(0.4, 0.6), [f0] * len(starts)), "pluck"


def _notes_melody(rng: np.random.Generator) -> tuple[list[_Note], str]:
    f0 = rng.uniform(330, 400)
    scale = (0, 2, 4, 7, 9)
    notes: list[_Note] = []
    t = 0.0
    while t < AUDIO_DURATION_S:
        dur = rng.uniform(0.2, 0.4)
        notes.append((t, dur, _semi(f0, scale[int(rng.integers(len(scale)))])))
        t += dur
    return notes, "vibrato"


def _notes_trill(rng: np.random.Generator) -> tuple[list[_Note], str]:
    f0, step = rng.uniform(520, 620), rng.uniform(0.05, 0.08)
    upper = _semi(f0, float(rng.choice([1, 2])))
    starts = np.arange(0.0, AUDIO_DURATION_S, step)
    return _sequence(starts, step, [f0 if k % 2 == 0 else upper for k in range(len(starts))]), "legato"


def _notes_arpeggio(rng: np.random.Generator) -> tuple[list[_Note], str]:
    f0, step = rng.uniform(760, 880), rng.uniform(0.08, 0.13)
    pattern = (0, 4, 7, 4) if rng.random() < 0.5 else (0, 4, 7)
    starts = np.arange(0.0, AUDIO_DURATION_S - 0.02, step)
    freqs = [_semi(f0, pattern[k % len(pattern)]) for k in range(len(starts))]
    return _sequence(starts, step * 0.8, freqs), "gate"


def _notes_bells(rng: np.random.Generator) -> tuple[list[_Note], str]:
    f0 = rng.uniform(1350, 1600)
    n = int(rng.integers(3, 7))
    starts = np.sort(rng.uniform(0.0, AUDIO_DURATION_S - 0.2, size=n))
    freqs = [_semi(f0, float(rng.choice([0, -3, 2]))) for _ in range(n)]
    return _sequence(starts, 0.6, freqs), "bell"


# name -> (oscillator, note generator); topics are ordered by rising pitch register.
_TRACK_SPECS: dict[str, tuple[str, Callable[[np.random.Generator], tuple[list[_Note], str]]]] = {
    "low_sine_drone": ("sine", _notes_low_drone),
    "low_square_pulse": ("square", _notes_low_pulse),
    "midlow_triangle_walk": ("triangle", _notes_walk),
    "mid_saw_pulses": ("saw", _notes_mid_pulse),
    "mid_sine_melody": ("sine", _notes_melody),
    "high_saw_trill": ("saw", _notes_trill),
    "high_square_arpeggio": ("square", _notes_arpeggio),
    "high_sine_bells": ("sine", _notes_bells),
}
TRACK_TOPICS: tuple[str, ...] = tuple(f"track:{name}" for name in _TRACK_SPECS)


def _render_track(topic: str, rng: np.random.Generator) -> np.ndarray:
    """Synthesise 1.5 s of mono int16 audio at 16 kHz whose pitch and timbre show ``topic``."""
    kind, note_fn = _TRACK_SPECS[topic]
    notes, shape = note_fn(rng)
    n = _N_SAMPLES
    t = np.arange(n) / SAMPLE_RATE
    freq = np.full(n, notes[0][2])
    env = np.zeros(n)
    for start, dur, f in notes:
        s = int(start * SAMPLE_RATE)
        e = min(n, int((start + dur) * SAMPLE_RATE))
        if e <= s:
            continue
        freq[s:e] = f
        tr = np.arange(e - s) / SAMPLE_RATE
        if shape in ("pluck", "bell"):
            tau = 0.25 * dur if shape == "pluck" else rng.uniform(0.15, 0.35)
            seg = np.exp(-tr / tau) * np.minimum(1.0, tr / 0.004)
        else:
            attack = 0.15 if shape == "legato" and dur > 1.0 else 0.01
            seg = np.minimum(1.0, tr / attack) * np.minimum(1.0, (dur - tr) / 0.02)
        env[s:e] = np.maximum(env[s:e], seg)
    if shape == "legato" and len(notes) == 1:  # slow swell of a drone
        env *= 0.75 + 0.25 * np.sin(2 * np.pi * rng.uniform(0.5, 2.0) * t + rng.uniform(0, 2 * np.pi))
    vib_depth = 0.012 if shape == "vibrato" else 0.002
    freq = freq * (1.0 + vib_depth * np.sin(2 * np.pi * rng.uniform(4.5, 6.5) * t))
    phase = 2 * np.pi * np.cumsum(freq) / SAMPLE_RATE + rng.uniform(0, 2 * np.pi)
    signal = _osc(kind, phase) * env
    if shape == "bell":  # a quiet inharmonic partial gives the bell its colour
        signal += 0.2 * np.sin(2.76 * phase) * env
    peak = float(np.max(np.abs(signal))) or 1.0
    signal = signal / peak + rng.normal(0.0, rng.uniform(0.002, 0.01), size=n)
    signal *= rng.uniform(0.5, 0.85)
    return np.clip(np.rint(signal * 32767), -32768, 32767).astype(np.int16)


def _wav_bytes(samples: np.ndarray) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(samples.astype("<i2").tobytes())
    return buf.getvalue()


TOPICS: tuple[str, ...] = FILM_TOPICS + PRODUCT_TOPICS + TRACK_TOPICS
"""All 24 topics, ``"<domain>:<name>"``; the index in this tuple is the topic id."""


# --------------------------------------------------------------------------- items


@dataclass
class _Items:
    item_id: list[str]
    domain: list[str]
    topic: np.ndarray  # int index into TOPICS
    weight: np.ndarray  # popularity weight, 0 for cold items
    cold: np.ndarray  # bool


def _domain_sizes(n_items: int) -> dict[str, int]:
    n_film = int(round(n_items * _DOMAIN_SHARE["film"]))
    n_prod = int(round(n_items * _DOMAIN_SHARE["product"]))
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
        ids += [f"{_ID_PREFIX[domain]}-{i:0{width}d}" for i in range(1, n + 1)]
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

    with tqdm(total=n, desc="demo items", unit="item", disable=not progress) as bar:
        for i, (item_id, domain) in enumerate(zip(items.item_id, items.domain)):
            rng = _child_rng(seed, 3, i)
            topic = TOPICS[int(items.topic[i])].split(":", 1)[1]
            image_path: str | None = None
            audio_path: str | None = None
            if domain == "film":
                title, description = _film_text(topic, rng)
            elif domain == "product":
                title, description, _ = _product_text(rng)
                img = _render_product(topic, rng)
                _atomic_write_bytes(images_dir / f"{item_id}.png", _png_bytes(img))
                image_path = f"{images_dir.name}/{item_id}.png"
            else:
                title, description = _track_text(rng)
                samples = _render_track(topic, rng)
                _atomic_write_bytes(audio_dir / f"{item_id}.wav", _wav_bytes(samples))
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
    with tqdm(total=n_users, desc="demo users", unit="user", disable=not progress) as bar:
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
            ev_fav = np.searchsorted(np.cumsum(_FUNNEL_FAVOURITE), u_fav * _FUNNEL_FAVOURITE.sum())
            ev_glob = np.searchsorted(np.cumsum(_FUNNEL_GLOBAL), u_glob * _FUNNEL_GLOBAL.sum())
            ev = np.minimum(np.where(is_fav, ev_fav, ev_glob), len(_EVENTS) - 1)
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
            "event": np.asarray(_EVENTS, dtype=object)[ev_idx].tolist(),
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
        raise ValueError(f"n_items must be at least {MIN_ITEMS} (two items per topic), got {n_items}")
    if int(n_users) < 1:
        raise ValueError(f"n_users must be at least 1, got {n_users}")
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
    _atomic_write_parquet(item_topics, files.truth / "item_topics.parquet")
    _atomic_write_parquet(tastes, files.truth / "user_tastes.parquet")
    _atomic_write_parquet(interactions, files.interactions)
    _atomic_write_parquet(catalog, files.catalog)

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

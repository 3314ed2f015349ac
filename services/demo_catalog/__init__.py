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

from tlrec.services.demo_catalog.audio import TRACK_TOPICS
from tlrec.services.demo_catalog.constants import (
    AUDIO_DURATION_S,
    DOMAINS,
    EPOCH,
    IMAGE_SIZE,
    SAMPLE_RATE,
    WINDOW_S,
)
from tlrec.services.demo_catalog.images import PRODUCT_TOPICS
from tlrec.services.demo_catalog.text import FILM_TOPICS
from tlrec.services.demo_catalog.world import TOPICS, DemoFiles, generate_demo

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


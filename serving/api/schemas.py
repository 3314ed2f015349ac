"""Request and response schemas of the HTTP API (separate models, every list and string bounded).

The limits are part of the contract (they appear in the OpenAPI schema); a request past
one gets 422 with a message naming the field.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, WithJsonSchema
from pydantic_core import PydanticCustomError

MAX_K = 1000
MAX_HISTORY = 1000
MAX_CANDIDATES = 10_000
MAX_EXCLUDE = 1000
MAX_EVENTS = 1000
MAX_ID_CHARS = 256

Id = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_CHARS)]
Source = Literal["model", "history", "popular"]
FallbackReason = Literal["unknown_user", "no_known_items", "no_item_vectors", "error", "timeout"]
# Timestamps: 1970-01-01T00:00:00Z <= t < 2100-01-01T00:00:00Z, as int seconds or ISO 8601.
MIN_TIMESTAMP = 0
END_TIMESTAMP = 4_102_444_800  # 2100-01-01T00:00:00Z, excluded
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_END = dt.datetime(2100, 1, 1, tzinfo=dt.timezone.utc)
_MS_HINT = 10**11  # from here to 2100 in milliseconds, an int is refused with "looks like milliseconds"
_ISO_8601 = re.compile(
    r"\d{4}-\d{2}-\d{2}(?:[Tt ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:[Zz]|[+-]\d{2}:\d{2})?)?", re.ASCII
)
TIMESTAMP_HELP = (
    "Unix seconds (an integer, 0 <= t < 4102444800) or an ISO 8601 date-time string "
    "(`2024-05-01T12:00:00Z`, `2024-05-01T14:00:00+02:00`; no offset = UTC; a bare date = its midnight UTC), "
    "from 1970-01-01 to before 2100-01-01 UTC. Milliseconds, fractions of a second in numbers, booleans, "
    "negative numbers and numeric strings are refused (422)."
)


def _integral_float_to_int(value: object) -> object:
    """``5.0`` -> ``5``: JSON Schema's integer includes integral numbers written with a fraction.

    Everything else is left to the strict check (``"5"`` and ``true`` stay refused).
    """
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# An int in a JSON body: strict (no strings, no booleans), but 5.0 counts as 5 (as in JSON Schema).
JsonInt = Annotated[int, BeforeValidator(_integral_float_to_int)]


def _bad_timestamp(message: str) -> PydanticCustomError:
    return PydanticCustomError("timestamp", f"{message} (Unix seconds or ISO 8601, 1970-01-01 .. 2099-12-31 UTC)")


def check_timestamp(value: object) -> object:
    """An int of seconds or a ``datetime`` from ISO 8601, within ``[1970-01-01, 2100-01-01)`` UTC; else a 422.

    Integers are seconds only: there is no unit guessing (a value in the millisecond range is
    refused, with a hint), so the stored event time is exactly what was sent. ``None`` passes
    (the field's default). Other types are refused here rather than coerced.
    """
    if value is None:
        return value
    if isinstance(value, bool):
        raise _bad_timestamp("a boolean is not a timestamp")
    if isinstance(value, float):
        if not value.is_integer():
            raise _bad_timestamp("must be a whole number of seconds")
        value = int(value)  # JSON Schema's integer: 1700000000.0 is one
    if isinstance(value, int):
        if MIN_TIMESTAMP <= value < END_TIMESTAMP:
            return value
        if _MS_HINT <= value < 1000 * END_TIMESTAMP:
            raise _bad_timestamp("out of range: this looks like milliseconds; send seconds")
        raise _bad_timestamp("out of range")
    if isinstance(value, str):
        if len(value) > 40 or not _ISO_8601.fullmatch(value):
            raise _bad_timestamp("not an ISO 8601 date-time")
        try:
            parsed = dt.datetime.fromisoformat(value.upper())
        except ValueError as exc:
            raise _bad_timestamp(f"not a valid date-time ({exc})") from None
        aware = parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=dt.timezone.utc)
        if not _EPOCH <= aware < _END:
            raise _bad_timestamp("out of range")
        return parsed
    raise _bad_timestamp("must be an integer or a string")


Timestamp = Annotated[
    int | dt.datetime,
    BeforeValidator(check_timestamp),
    WithJsonSchema({
        "anyOf": [
            {"type": "integer", "minimum": MIN_TIMESTAMP, "maximum": END_TIMESTAMP - 1},
            # the pattern bounds the year; the instant (after the offset) must also be in range
            {"type": "string", "format": "date-time", "pattern": "^(19[7-9][0-9]|20[0-9][0-9])-", "maxLength": 40},
        ],
    }),
]


class _In(BaseModel):
    """Request bodies: strict (no coercion: ``"5"`` or ``true`` is not an int), no unknown fields."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------------------- errors
class ErrorOut(_Out):
    """Every error: one line in ``error``; for 422 the failing fields in ``detail``."""

    error: str
    detail: list[dict[str, str]] | None = None


# ---------------------------------------------------------------------------- recommendations
#: History items listed per explained item (the rest are summed in ``other_contributions``).
MAX_CONTRIBUTIONS = 5
TITLE_HELP = "The item's catalog title (null: no catalog loaded, or the item is not in it)."


class HistoryContribution(_Out):
    item_id: str = Field(description="A history item.")
    title: str | None = Field(default=None, description=TITLE_HELP)
    contribution: float = Field(
        description="Its share of the score (through the user tower's tanh by DeepLIFT's rescale rule): every "
        "history item's share sums exactly to `score - baseline - head`.")
    content: float = Field(description="The part of `contribution` that comes from pre-trained content vectors "
                                       "(the rest from learned ids).")


class ItemExplanation(_Out):
    """Why the item scored so: `score = baseline + (every history item's contribution) + head
    = content + learned_id + head` (exact; see `explanation_method`)."""

    score: float = Field(description="The model's score of the item (as `score` above, up to rounding).")
    baseline: float = Field(description="The item's score for an empty history (its prior).")
    head: float = Field(description="The ranking head's term, non-linear and not split (0 when the model has none).")
    content: float = Field(description="Part of the score from the pre-trained content vectors.")
    learned_id: float = Field(description="Part of the score from learned item ids.")
    contributions: list[HistoryContribution] = Field(
        description=f"The (at most {MAX_CONTRIBUTIONS}) history items with the largest |contribution|, largest first.")
    other_contributions: float = Field(description="Sum of the contributions of the history items not listed.")
    history_items: int = Field(ge=0, description="Distinct history items the score was split over.")


class ScoredItem(_Out):
    item_id: str
    score: float
    rank: int = Field(ge=1)
    title: str | None = Field(default=None, description=TITLE_HELP)
    explanation: ItemExplanation | None = Field(default=None, description="With `explain=true`, when the model "
                                                "can split its score (see `explanation_method`).")


class RecommendationsOut(_Out):
    user_id: str = Field(description="As sent; empty for an anonymous history.")
    items: list[ScoredItem] = Field(description="Best first; fewer than k when fewer items are allowed.")
    source: Source = Field(
        description="'model': the model (with the user's fresh events, if any); 'history': the model from "
        "a sent or fresh history of a user it does not know; 'popular': the popularity fallback."
    )
    fallback_reason: FallbackReason | None = Field(default=None, description="Why the fallback answered.")
    model_version: str = Field(description="The version that answered (the variant's, inside an experiment).")
    experiment: str | None = Field(
        default=None, description="The A/B experiment the user is in (null: not in one; the default model answered)."
    )
    variant: str | None = Field(default=None, description="The user's variant in `experiment`, whose model answered.")
    explanation_method: str | None = Field(
        default=None, description="With `explain=true`: what the items' `explanation` figures are (null: none).")
    explanation_unavailable: str | None = Field(
        default=None, description="With `explain=true`: why the items carry no explanation (e.g. a model that "
        "cannot split its scores, or the popularity fallback).")


class HistoryItem(_In):
    item_id: Id
    weight: float = Field(default=1.0, gt=0, le=1e6, description="Strength of the interaction (1 = one event).")
    timestamp: Timestamp | None = Field(default=None, description=TIMESTAMP_HELP)
    event: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = Field(
        default=None, description="Event type (view, cart, purchase...): read by a next-item model.")


class RecommendFilters(_In):
    exclude_items: list[Id] = Field(default_factory=list, max_length=MAX_EXCLUDE, description="Never returned.")
    exclude_history: bool = Field(default=True, description="Drop the history's own items from the answer.")


class HistoryRecommendIn(_In):
    """Recommendations for a history sent with the request (new or anonymous users)."""

    history: list[HistoryItem] = Field(
        default_factory=list, max_length=MAX_HISTORY,
        description="Items oldest first: the model may weigh recent ones more (by position).",
    )
    k: JsonInt = Field(default=10, ge=1, le=MAX_K)
    candidates: list[Id] | None = Field(
        default=None, min_length=1, max_length=MAX_CANDIDATES, description="Rank only among these items."
    )
    filters: RecommendFilters = Field(default_factory=RecommendFilters)
    user_id: Id | None = Field(
        default=None,
        description="Optional: names the user in the answer; a user in an A/B experiment gets their variant's model.",
    )


class SimilarOut(_Out):
    item_id: str
    items: list[ScoredItem]
    source: Literal["model", "popular"]
    fallback_reason: FallbackReason | None = None
    model_version: str


# ---------------------------------------------------------------------------- events
class EventIn(_In):
    """One interaction (the interactions contract)."""

    user_id: Id
    item_id: Id = Field(description="Items unknown to the model are stored but do not change answers.")
    timestamp: Timestamp | None = Field(default=None, description=f"{TIMESTAMP_HELP} Default: now.")
    event: Annotated[str, StringConstraints(min_length=1, max_length=64)] = "view"
    value: float | None = Field(default=None, ge=-1e12, le=1e12)


class EventsIn(_In):
    events: list[EventIn] = Field(min_length=1, max_length=MAX_EVENTS)


class EventsAck(_Out):
    accepted: int = Field(description="Events in the stored batch.")
    duplicate: bool = Field(description="True when this Idempotency-Key was already stored (nothing new written).")
    sequence: int = Field(description="The batch's position in the event log.")
    unknown_items: int = Field(description="Events naming items the current model does not know.")


# ---------------------------------------------------------------------------- service
class HealthOut(_Out):
    status: Literal["ok"]
    model_version: str | None


class ReadyOut(_Out):
    status: Literal["ready", "not_ready"]
    model_version: str | None
    reason: str | None = None


class PingOut(_Out):
    status: Literal["ok"] = "ok"


class VariantOut(_Out):
    experiment: str
    variant: str
    model_version: str


class ReloadOut(_Out):
    model_version: str = Field(description="The default version (`ARTIFACTS/current`) now in service.")
    previous_version: str | None
    changed: bool = Field(description="False when the versions and the experiment files are as before.")
    variants: list[VariantOut] = Field(default_factory=list, description="Each experiment variant's version now.")


# ---------------------------------------------------------------------------- probabilities
class PropensityIn(_In):
    item_ids: list[Id] = Field(min_length=1, max_length=MAX_K, description="Items to give a probability for.")
    event: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = Field(
        default=None, description="The event asked about, as the model was trained (`--positive`, e.g. "
        "`purchase` or `rating>=4`); null: the model's own.")


class ItemProbability(_Out):
    item_id: str
    probability: float = Field(ge=0.0, le=1.0, description="Calibrated P(event | user, item).")
    known_item: bool = Field(description="False: an item without training examples, placed by its content.")


class PropensityOut(_Out):
    user_id: str
    event: str = Field(description="The event the probabilities are of (the model's `--positive`).")
    known_user: bool = Field(description="False: a user the model has not seen (fresh events still count).")
    fresh_events: int = Field(description="The user's fresh events that counted (labelled by `event`).")
    items: list[ItemProbability] = Field(description="In the order asked.")
    model_version: str


class ReturnOut(_Out):
    user_id: str
    probability: float = Field(ge=0.0, le=1.0, description="Calibrated P(at least one event within the horizon "
                                                           "after `as_of`).")
    known_user: bool = Field(description="False: no events known; `probability` is the base rate.")
    horizon_days: float
    as_of: int = Field(description="Unix seconds: the model's as-of time, or the user's newest fresh event if later.")
    model_version: str


# ---------------------------------------------------------------------------- console
MAX_SEARCH = 100
MAX_HISTORY_EVENTS = 1000


class SessionOut(_Out):
    role: Literal["user", "admin"] = Field(description="`admin`: the key may use admin routes (reload).")
    model_version: str | None
    model: str | None = Field(description="The default model's name (ncf, ease, blend ...).")
    explanation_method: str | None = Field(description="What `explain=true` returns for this model (null: none).")
    catalog_items: int | None = Field(description="Items in the console's catalog (null: no catalog).")
    catalog_note: str | None = Field(description="Where the catalog came from, or why there is none.")
    experiments: list[str] = Field(description="The served experiments.")


class CatalogEntry(_Out):
    item_id: str
    title: str
    has_image: bool
    has_audio: bool


class CatalogSearchOut(_Out):
    query: str
    total: int = Field(description="Items matching (more than `items` holds when over `limit`).")
    items: list[CatalogEntry] = Field(description="Titles starting with the query first, then catalog order.")


class VectorSource(_Out):
    """Which pre-trained encoder made an item's vector for one modality (its model card)."""

    modality: str
    encoder: str | None
    version: str | None
    dim: int | None
    source: str | None = Field(description="Where the encoder's weights come from.")
    input_spec: str | None


class CatalogItemOut(_Out):
    item_id: str
    title: str
    description: str
    has_image: bool = Field(description="`GET /v1/catalog/items/{item_id}/image` serves it.")
    has_audio: bool = Field(description="`GET /v1/catalog/items/{item_id}/audio` serves it.")
    metadata: dict[str, str] = Field(description="The catalog's other columns.")
    known_to_model: bool = Field(description="The served model has the item.")
    training_interactions: float | None = Field(description="Its interactions in training (popularity counts).")
    vectors: list[VectorSource] = Field(description="The encoders behind the item's content vector, per "
                                                    "modality the item has an input for.")
    vectors_note: str | None = None


class HistoryEventOut(_Out):
    item_id: str
    title: str | None = Field(default=None, description=TITLE_HELP)
    timestamp: int | None = Field(description="Unix seconds (null: not recorded).")
    event: str | None = Field(description="view, click, purchase ... (null: not recorded).")
    origin: Literal["training", "fresh"] = Field(description="Training data, or posted to /v1/events since.")


class UserHistoryOut(_Out):
    user_id: str
    known_user: bool = Field(description="The served model has the user.")
    total: int = Field(description="Events in the history (`events` holds the newest `limit`).")
    events: list[HistoryEventOut] = Field(description="Oldest first.")
    source: str = Field(description="Where the training events came from.")


class VariantView(_Out):
    name: str
    weight: float
    model_version: str
    exposures: int = Field(description="Users exposed so far (the exposure log).")


class ExperimentOut(_Out):
    name: str
    description: str
    traffic: float
    control: str
    start: float | None = Field(description="Unix seconds (null: open).")
    stop: float | None
    active: bool
    file: str
    variants: list[VariantView]
    analysis: dict[str, Any] | None = Field(
        description="`tlrec ab analyze --json` on the exposures so far, with the API's events as outcomes.")
    plots: dict[str, str] = Field(description="The report's PNGs (effects, variants, sequential), base64.")
    analysis_note: str | None = Field(description="Why there is no analysis.")


class ExperimentsOut(_Out):
    experiments: list[ExperimentOut]


class ReportSection(_Out):
    data: dict[str, Any] | None
    png: str | None = Field(description="Its plot, PNG in base64.")
    source: str | None
    note: str | None


class ModelReportOut(_Out):
    version: str
    model: str
    task: str
    manifest: dict[str, Any]
    validation: list[dict[str, Any]] = Field(description="`name, validation_ndcg, fit_seconds, note, served`.")
    validation_note: str | None
    transfer: ReportSection
    encoders: ReportSection

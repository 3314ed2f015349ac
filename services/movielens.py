"""`tlrec import-movielens`: MovieLens (100k or latest-small layout) -> catalog + interactions.

Item content is the title and the genres only; user tags are never used as content
(they are behaviour, and would leak it).
"""

from __future__ import annotations

import logging
from pathlib import Path

import polars as pl

from tlrec.files import write_parquet_atomic
from tlrec.tables import Columns, DataError

logger = logging.getLogger(__name__)

ML100K_GENRES = [
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
]


def _describe(genres: pl.Expr) -> pl.Expr:
    """'Adventure|Animation' -> 'Genres: Adventure, Animation.' ('' when none listed)."""
    joined = genres.str.replace_all(r"\|", ", ")
    return pl.when(genres.is_in(["", "(no genres listed)"]) | genres.is_null()).then(pl.lit("")).otherwise(
        pl.lit("Genres: ") + joined + pl.lit(".")
    )


def _read_latest_small(path: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    movies = pl.read_csv(path / "movies.csv", schema_overrides={"movieId": pl.Utf8})
    ratings = pl.read_csv(path / "ratings.csv", schema_overrides={"userId": pl.Utf8, "movieId": pl.Utf8})
    catalog = movies.select(
        pl.col("movieId").alias(Columns.ITEM),
        pl.col("title").alias(Columns.TITLE),
        _describe(pl.col("genres")).alias(Columns.DESCRIPTION),
        pl.col("genres"),
    )
    interactions = ratings.select(
        pl.col("userId").alias(Columns.USER),
        pl.col("movieId").alias(Columns.ITEM),
        pl.col("timestamp").cast(pl.Int64).alias(Columns.TIMESTAMP),
        pl.lit("rating").alias(Columns.EVENT),
        pl.col("rating").cast(pl.Float64).alias(Columns.VALUE),
    )
    return catalog, interactions


def _read_100k(path: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    rows = []
    for line in (path / "u.item").read_bytes().decode("latin-1").splitlines():
        if not line.strip():
            continue
        parts = line.split("|")
        flags = parts[5:5 + len(ML100K_GENRES)]
        genres = "|".join(g for g, f in zip(ML100K_GENRES, flags) if f == "1" and g != "unknown")
        rows.append({"item_id": parts[0], "title": parts[1], "genres": genres})
    movies = pl.DataFrame(rows, schema={"item_id": pl.Utf8, "title": pl.Utf8, "genres": pl.Utf8})
    catalog = movies.select(
        Columns.ITEM, Columns.TITLE, _describe(pl.col("genres")).alias(Columns.DESCRIPTION), "genres"
    )
    ratings = pl.read_csv(
        path / "u.data", separator="\t", has_header=False,
        new_columns=["user", "item", "rating", "ts"],
        schema_overrides={"user": pl.Utf8, "item": pl.Utf8, "rating": pl.Float64, "ts": pl.Int64},
    )
    interactions = ratings.select(
        pl.col("user").alias(Columns.USER),
        pl.col("item").alias(Columns.ITEM),
        pl.col("ts").alias(Columns.TIMESTAMP),
        pl.lit("rating").alias(Columns.EVENT),
        pl.col("rating").alias(Columns.VALUE),
    )
    return catalog, interactions


def import_movielens(path: Path, out: Path) -> tuple[Path, Path]:
    """Write ``out/catalog.parquet`` and ``out/interactions.parquet``; returns their paths."""
    path = Path(path)
    if (path / "ratings.csv").is_file() and (path / "movies.csv").is_file():
        reader, layout = _read_latest_small, "latest-small"
    elif (path / "u.data").is_file() and (path / "u.item").is_file():
        reader, layout = _read_100k, "100k"
    else:
        raise DataError(f"{path}: not a MovieLens folder (expected ratings.csv + movies.csv, or u.data + u.item)")
    try:
        catalog, interactions = reader(path)
    except (pl.exceptions.PolarsError, OSError, IndexError) as exc:
        raise DataError(f"{path}: cannot read MovieLens {layout} files ({str(exc).splitlines()[0][:160]})") from None
    out.mkdir(parents=True, exist_ok=True)
    catalog_path, interactions_path = out / "catalog.parquet", out / "interactions.parquet"
    write_parquet_atomic(catalog, catalog_path)
    write_parquet_atomic(interactions.sort([Columns.USER, Columns.TIMESTAMP]), interactions_path)
    logger.info("MovieLens %s: %d items, %d interactions, %d users -> %s", layout, catalog.height,
                interactions.height, interactions[Columns.USER].n_unique(), out)
    return catalog_path, interactions_path

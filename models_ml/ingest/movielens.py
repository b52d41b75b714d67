"""MovieLens (GroupLens) directories, the layout detected from the files present:

- ``ratings.csv`` + ``movies.csv`` (+ ``tags.csv``): ml-latest-small, ml-latest, ml-25m
  (header row, comma-separated, quoted titles, UTF-8);
- ``u.data`` + ``u.item`` (+ ``u.genre``): ml-100k (tab-separated ratings without header;
  pipe-separated latin-1 items with 19 genre flags);
- ``ratings.dat`` + ``movies.dat`` (+ ``tags.dat``): ml-1m, ml-10m (``::``-separated, latin-1
  for ml-1m).

Item text is the movie's topical metadata, never its title: ``"adventure, animation,
1990s, pixar, time travel"`` = the genres (lower-cased), the release decade read from
the title's year, and the :data:`TOP_TAGS` most used tags that at least
:data:`MIN_TAG_USERS` different users applied somewhere in the data set (a tag only one
user writes, like 'in netflix queue', names a habit, not a topic). A movie with none of
these falls back to its title (counted in the stats). engagement = rating, event_ts from
unix seconds, ids as strings. Text files are read as UTF-8, falling back to latin-1.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

from models_ml.ingest import validate as v

TOP_TAGS = 5
MIN_TAG_USERS = 2
NO_GENRES = "(no genres listed)"
# ml-100k u.genre, used when the file is absent
ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)
ML100K_ITEM_FIELDS = ("movie_id", "title", "release_date", "video_release_date", "imdb_url")


@dataclass(frozen=True)
class Layout:
    name: str
    ratings: str
    movies: str
    extra: str  # optional: tags (csv, dat) or genre names (100k)


LAYOUTS = (
    Layout("ml-latest", "ratings.csv", "movies.csv", "tags.csv"),
    Layout("ml-100k", "u.data", "u.item", "u.genre"),
    Layout("ml-1m", "ratings.dat", "movies.dat", "tags.dat"),
)


def expected_files() -> str:
    return "; ".join(f"{l.ratings} + {l.movies} (optional {l.extra})" for l in LAYOUTS)


def detect_layout(path: Path | None) -> Layout:
    if path is None:
        raise v.IngestError(f"the movielens source needs a directory (IE_SOURCE_PATH) holding {expected_files()}")
    path = Path(path)
    if not path.is_dir():
        raise v.IngestError(f"{path}: MovieLens directory does not exist; expected it to hold {expected_files()}")
    present = {p.name for p in path.iterdir() if p.is_file()}
    for layout in LAYOUTS:
        if layout.ratings in present and layout.movies in present:
            return layout
    partial = [
        f"found {have} but not {missing}"
        for l in LAYOUTS
        for have, missing in ((l.ratings, l.movies), (l.movies, l.ratings))
        if have in present and missing not in present
    ]
    raise v.IngestError(
        f"{path}: no MovieLens layout found ({'; '.join(partial) or 'files present: ' + (', '.join(sorted(present)) or 'none')}); "
        f"expected {expected_files()}"
    )


def load(path: Path | None) -> v.IngestResult:
    layout = detect_layout(path)
    path = Path(path)
    loader = {"ml-latest": _load_csv_layout, "ml-100k": _load_100k, "ml-1m": _load_dat_layout}[layout.name]
    return loader(path, layout)


# ---- readers ------------------------------------------------------------------
def decode(file: Path) -> str:
    data = file.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def read_csv(file: Path, required: tuple[str, ...]) -> pl.DataFrame:
    """A headed CSV with every column as a string (bad values are judged later, not here)."""
    data = file.read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        data = data.decode("latin-1").encode("utf-8")
    return v.read_csv_strings(file, required, data)


def read_lines(file: Path, sep: str, names: tuple[str, ...]) -> tuple[pl.DataFrame, pl.DataFrame, int]:
    """A header-less file split on ``sep`` (which may be several characters, e.g. ``::``).

    Returns the rows with the expected number of fields (row numbers = line numbers),
    the rejected rows (blank lines, wrong field counts) and the number of lines read.
    """
    lines = pl.Series("line", [decode(file)]).str.split("\n").explode().str.strip_suffix("\r")
    if lines.len() and lines[-1] == "":
        lines = lines.head(lines.len() - 1)  # the final newline ends the last line
    df = pl.DataFrame({"line": lines}).with_row_index("__row", offset=1)
    df = df.with_columns(pl.col("line").str.split(sep).alias("__fields"))
    blank = pl.col("line").str.strip_chars() == ""
    wrong = pl.col("__fields").list.len() != len(names)
    bad = df.filter(blank | wrong).with_columns(
        pl.when(blank).then(pl.lit(v.EMPTY_ROW))
        .otherwise(pl.format(f"{v.WRONG_FIELD_COUNT} (got {{}}, expected {len(names)})", pl.col("__fields").list.len()))
        .alias("__reason")
    )
    ok = df.filter(~(blank | wrong)).select(
        "__row", *[pl.col("__fields").list.get(i).alias(n) for i, n in enumerate(names)]
    )
    return ok, v.rejected_frame(bad, file.name, ["line"]), df.height


# ---- shared assembly ----------------------------------------------------------
def _tags_text(tags: pl.DataFrame | None, file: str, raw_cols: list[str], user_col: str, item_col: str,
               tag_col: str, movie_ids: pl.Series) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(item_id, tags) with the top shared tags joined, and the rejected tag rows."""
    if tags is None:
        return pl.DataFrame(schema={"item_id": pl.Utf8, "tags": pl.Utf8}), v.empty_rejected()
    tags = v.with_row_numbers(tags).with_columns(
        v.clean_id(item_col).alias("__id"),
        pl.col(tag_col).str.strip_chars().str.to_lowercase().str.replace_all(r"[,;|]", " ").alias("__tag"),
        v.clean_id(user_col).alias("__user"),
    )
    reason = (
        pl.when(pl.col("__id").is_null()).then(pl.lit(v.NULL_ITEM_ID))
        .when(pl.col("__tag").fill_null("") == "").then(pl.lit(v.EMPTY_TAG))
        .when(~pl.col("__id").is_in(movie_ids.implode())).then(pl.lit(v.UNKNOWN_ITEM_ID))
    )
    tags = tags.with_columns(reason.alias("__reason"))
    rejected = v.rejected_frame(v.mark_empty_rows(tags.filter(pl.col("__reason").is_not_null()), raw_cols), file, raw_cols)
    shared = (
        tags.filter(pl.col("__reason").is_null())
        .filter(pl.col("__user").n_unique().over("__tag") >= MIN_TAG_USERS)
    )
    top = (
        shared
        .group_by("__id", "__tag").len()
        .sort(["__id", "len", "__tag"], descending=[False, True, False])
        .group_by("__id", maintain_order=True)
        .agg(pl.col("__tag").head(TOP_TAGS).str.join(", ").alias("tags"))
        .rename({"__id": "item_id"})
    )
    return top, rejected


def _decade(title: pl.Expr) -> pl.Expr:
    """'1990s' from a title ending in its year, '(1995)'; null without one."""
    year = title.str.extract(r"\((\d{4})\)\s*$", 1).cast(pl.Int32, strict=False)
    return pl.when(year.is_not_null()).then(pl.format("{}s", (year // 10) * 10))


def _topics(genres: pl.Expr, decade: pl.Expr, tags: pl.Expr) -> pl.Expr:
    """'genre, genre, decade, tag, tag' from whatever is present (null when nothing is)."""
    parts = [pl.when(e.is_not_null() & (e != "")).then(e) for e in (genres.str.to_lowercase(), decade, tags)]
    return pl.concat_str(parts, separator=", ", ignore_nulls=True).replace("", None)


def _assemble(
    path: Path, layout: Layout, *, movies: pl.DataFrame, movies_raw: list[str], ratings: pl.DataFrame,
    ratings_cols: dict[str, str], ratings_raw: list[str], tags: pl.DataFrame | None, tags_cols: tuple[str, str, str],
    tags_raw: list[str], rejected: list[pl.DataFrame], rows_read: dict[str, int],
) -> v.IngestResult:
    """``movies`` has movie_col (raw id), title and __genres (', '-joined) columns."""
    movies = v.with_row_numbers(movies)
    movie_ids = movies.select(v.clean_id("__movie_id")).to_series().drop_nulls()
    top_tags, tag_rejected = _tags_text(tags, layout.extra, tags_raw, *tags_cols, movie_ids)
    movies = movies.with_columns(v.clean_id("__movie_id").alias("__id")).join(
        top_tags, left_on="__id", right_on="item_id", how="left", maintain_order="left"
    ).with_columns(_topics(pl.col("__genres"), _decade(pl.col("__title")), pl.col("tags")).alias("__desc"))
    checked = v.validate_items(
        movies, layout.movies, item_id="__movie_id", title="__title", text="__desc", raw_cols=movies_raw,
    )
    # MovieLens timestamps are unix seconds by the data set's own definition
    interactions, inter_rejected = v.validate_interactions(
        ratings, layout.ratings, **ratings_cols, raw_cols=ratings_raw, known_items=checked.items["item_id"],
        rejected_items=checked.rejected_ids, ts_unit="s",
    )
    return v.finalize(
        "movielens", path, items=checked.items, interactions=interactions,
        rejected=[*rejected, checked.rejected, inter_rejected, tag_rejected], rows_read=rows_read,
        notes={"layout": layout.name, **checked.notes},
    )


# ---- the three layouts --------------------------------------------------------
def _load_csv_layout(path: Path, layout: Layout) -> v.IngestResult:
    ratings = read_csv(path / layout.ratings, ("userId", "movieId", "rating", "timestamp"))
    movies = read_csv(path / layout.movies, ("movieId", "title", "genres"))
    tags_file = path / layout.extra
    tags = read_csv(tags_file, ("userId", "movieId", "tag")) if tags_file.is_file() else None
    rows_read = {layout.ratings: ratings.height, layout.movies: movies.height}
    if tags is not None:
        rows_read[layout.extra] = tags.height
    movies_raw = list(movies.columns)
    movies = movies.with_columns(
        pl.col("movieId").alias("__movie_id"), pl.col("title").alias("__title"), _genres_from_pipes("genres")
    )
    return _assemble(
        path, layout, movies=movies, movies_raw=movies_raw, ratings=ratings,
        ratings_cols=dict(user_id="userId", item_id="movieId", event_ts="timestamp", engagement="rating"),
        ratings_raw=list(ratings.columns), tags=tags, tags_cols=("userId", "movieId", "tag"),
        tags_raw=list(tags.columns) if tags is not None else [], rejected=[], rows_read=rows_read,
    )


def _load_dat_layout(path: Path, layout: Layout) -> v.IngestResult:
    r_names = ("user_id", "movie_id", "rating", "timestamp")
    ratings, r_rej, r_n = read_lines(path / layout.ratings, "::", r_names)
    movies, m_rej, m_n = read_lines(path / layout.movies, "::", ("movie_id", "title", "genres"))
    rows_read = {layout.ratings: r_n, layout.movies: m_n}
    rejected = [r_rej, m_rej]
    tags = None
    t_names = ("user_id", "movie_id", "tag", "timestamp")
    if (path / layout.extra).is_file():
        tags, t_rej, t_n = read_lines(path / layout.extra, "::", t_names)
        rows_read[layout.extra] = t_n
        rejected.append(t_rej)
    movies = movies.with_columns(
        pl.col("movie_id").alias("__movie_id"), pl.col("title").alias("__title"), _genres_from_pipes("genres")
    )
    return _assemble(
        path, layout, movies=movies, movies_raw=["movie_id", "title", "genres"], ratings=ratings,
        ratings_cols=dict(user_id="user_id", item_id="movie_id", event_ts="timestamp", engagement="rating"),
        ratings_raw=list(r_names), tags=tags, tags_cols=("user_id", "movie_id", "tag"), tags_raw=list(t_names),
        rejected=rejected, rows_read=rows_read,
    )


def _load_100k(path: Path, layout: Layout) -> v.IngestResult:
    genre_names = _ml100k_genres(path / layout.extra)
    r_names = ("user_id", "item_id", "rating", "timestamp")
    ratings, r_rej, r_n = read_lines(path / layout.ratings, "\t", r_names)
    flag_cols = tuple(f"genre_{i}" for i in range(len(genre_names)))
    m_names = ML100K_ITEM_FIELDS + flag_cols
    movies, m_rej, m_n = read_lines(path / layout.movies, "|", m_names)
    # 'unknown' is ml-100k's "no genre" flag, like "(no genres listed)" elsewhere
    flagged = [
        pl.when(pl.col(c).str.strip_chars() == "1").then(pl.lit(name))
        for c, name in zip(flag_cols, genre_names)
        if name.lower() != "unknown"
    ]
    movies = movies.with_columns(
        pl.col("movie_id").alias("__movie_id"),
        pl.col("title").alias("__title"),
        pl.concat_str(flagged, separator=", ", ignore_nulls=True).replace("", None).alias("__genres"),
    )
    return _assemble(
        path, layout, movies=movies, movies_raw=list(m_names), ratings=ratings,
        ratings_cols=dict(user_id="user_id", item_id="item_id", event_ts="timestamp", engagement="rating"),
        ratings_raw=list(r_names), tags=None, tags_cols=("", "", ""), tags_raw=[],
        rejected=[r_rej, m_rej], rows_read={layout.ratings: r_n, layout.movies: m_n},
    )


def _genres_from_pipes(col: str) -> pl.Expr:
    g = pl.col(col).str.strip_chars()
    return (
        pl.when(g.is_null() | (g == "") | (g == NO_GENRES)).then(None)
        .otherwise(g.str.replace_all("|", ", ", literal=True))
        .alias("__genres")
    )


def _ml100k_genres(file: Path) -> tuple[str, ...]:
    """Genre names by flag position from u.genre ('name|index' lines), else the standard list."""
    if not file.is_file():
        return ML100K_GENRES
    pairs = []
    for n, line in enumerate(decode(file).splitlines(), start=1):
        if not line.strip():
            continue
        name, sep, idx = line.rpartition("|")
        if not sep or not idx.strip().isdigit():
            raise v.IngestError(f"{file}: line {n} is not 'genre|index': {line!r}")
        pairs.append((int(idx), name.strip()))
    idxs = sorted(i for i, _ in pairs)
    if idxs != list(range(len(pairs))):
        raise v.IngestError(f"{file}: genre indices must be 0..{len(pairs) - 1} without gaps, got {idxs}")
    return tuple(name for _, name in sorted(pairs))

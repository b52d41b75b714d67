"""MovieLens layouts on small hand-written fixtures, and the real ml-latest-small."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import polars as pl
import pytest

from models_ml import config
from models_ml.ingest import IngestError, load_source
from models_ml.ingest import validate as v

ML_LATEST_SMALL = config.REPO_ROOT.parent / "shared" / "data" / "ml-latest-small"

ML100K_GENRE = "\n".join(
    f"{g}|{i}" for i, g in enumerate(
        ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
         "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western"])
) + "\n"


def write(path: Path, text: str, encoding: str = "utf-8") -> None:
    path.write_bytes(text.encode(encoding))


def flags(*on: int) -> str:
    return "|".join("1" if i in on else "0" for i in range(19))


def by_id(df: pl.DataFrame, item_id: str) -> dict:
    return df.filter(pl.col("item_id") == item_id).to_dicts()[0]


def reasons(result) -> list[tuple[str, int, str]]:
    return result.rejected.select("source_file", "row_number", "reason").rows()


# ---- ratings.csv + movies.csv + tags.csv (ml-latest) ---------------------------
@pytest.fixture
def ml_latest(tmp_path: Path) -> Path:
    write(tmp_path / "ratings.csv", "userId,movieId,rating,timestamp\n"
          "1,1,4.0,964982703\n"
          "1,2,3.5,964981247\n"
          "2,1,5.0,1445714994\n"
          "2,3,abc,1445714995\n"      # row 4: non-numeric rating
          "3,99,4.0,1445714996\n"     # row 5: unknown movie
          "2,1,1.0,1445714994\n"      # row 6: same user, movie, time as row 3
          "3,3,4.5,1445714997\n")
    write(tmp_path / "movies.csv", "movieId,title,genres\n"
          "1,Toy Story (1995),Adventure|Animation|Children|Comedy|Fantasy\n"
          '2,"American President, The (1995)",Comedy|Drama|Romance\n'
          '3,"Misérables, Les",(no genres listed)\n')  # no genres, no year, no tags
    tags = [("1", "Pixar"), ("1", "pixar"), ("1", " PIXAR "), ("1", "fun"), ("1", "Fun"), ("1", "toys"),
            ("1", "buddy"), ("1", "cgi"), ("1", "animation"), ("2", "politics"), ("42", "orphan"), ("2", "")]
    write(tmp_path / "tags.csv", "userId,movieId,tag,timestamp\n"
          + "".join(f"{u},{m},{t},{1000 + u}\n" for u, (m, t) in enumerate(tags, start=1)))
    return tmp_path


def test_ml_latest_layout(ml_latest):
    r = load_source("movielens", ml_latest)
    assert r.stats["layout"] == "ml-latest"
    assert r.stats["rows_read"] == {"ratings.csv": 7, "movies.csv": 3, "tags.csv": 12}
    assert r.interactions.schema == pl.Schema(v.INTERACTION_SCHEMA)
    assert r.items.schema == pl.Schema(v.ITEM_SCHEMA)
    assert r.interactions.rows() == [
        ("1", "1", dt.datetime(2000, 7, 30, 18, 45, 3), 4.0),
        ("1", "2", dt.datetime(2000, 7, 30, 18, 20, 47), 3.5),
        ("2", "1", dt.datetime(2015, 10, 24, 19, 29, 54), 5.0),
        ("3", "3", dt.datetime(2015, 10, 24, 19, 29, 57), 4.5),
    ]
    # the metadata, not the title: genres (lower-cased), the decade of the title's year,
    # then the most used tags among those at least two users applied (lower-cased and
    # trimmed): pixar (3 users), fun (2); toys, buddy, cgi, animation: one user each
    assert by_id(r.items, "1") == {
        "item_id": "1", "title": "Toy Story (1995)",
        "text": "adventure, animation, children, comedy, fantasy, 1990s, pixar, fun",
    }
    assert by_id(r.items, "2")["title"] == "American President, The (1995)"
    assert by_id(r.items, "2")["text"] == "comedy, drama, romance, 1990s"  # 'politics': one user
    # no genres, no year, no shared tag: the text falls back to the title, and the stats say so
    assert by_id(r.items, "3") == {"item_id": "3", "title": "Misérables, Les", "text": "Misérables, Les"}
    assert r.stats["items_text_from_title"] == 1
    assert reasons(r) == [
        ("ratings.csv", 4, v.NON_NUMERIC_ENGAGEMENT),
        ("ratings.csv", 5, v.UNKNOWN_ITEM_ID),
        ("ratings.csv", 6, v.DUPLICATE_EVENT),
        ("tags.csv", 11, v.UNKNOWN_ITEM_ID),
        ("tags.csv", 12, v.EMPTY_TAG),
    ]
    assert json.loads(r.rejected["raw_row"][0]) == {"userId": "2", "movieId": "3", "rating": "abc",
                                                    "timestamp": "1445714995"}
    assert r.stats["rejected"] == {v.UNKNOWN_ITEM_ID: 2, v.DUPLICATE_EVENT: 1, v.EMPTY_TAG: 1,
                                   v.NON_NUMERIC_ENGAGEMENT: 1}
    assert r.stats["rejected_by_file"] == {
        "ratings.csv": {v.DUPLICATE_EVENT: 1, v.NON_NUMERIC_ENGAGEMENT: 1, v.UNKNOWN_ITEM_ID: 1},
        "tags.csv": {v.EMPTY_TAG: 1, v.UNKNOWN_ITEM_ID: 1},
    }
    assert (r.stats["interactions_kept"], r.stats["items_kept"], r.stats["users"]) == (4, 3, 3)


def test_tags_are_optional(ml_latest):
    (ml_latest / "tags.csv").unlink()
    r = load_source("movielens", ml_latest)
    assert by_id(r.items, "1")["text"] == "adventure, animation, children, comedy, fantasy, 1990s"
    assert "tags.csv" not in r.stats["rows_read"]


def test_missing_column_names_file_and_column(ml_latest):
    write(ml_latest / "ratings.csv", "userId,movieId,score,timestamp\n1,1,4.0,964982703\n")
    with pytest.raises(IngestError, match=r"ratings\.csv: missing column\(s\) rating"):
        load_source("movielens", ml_latest)


# ---- u.data + u.item (+ u.genre) (ml-100k) ------------------------------------
@pytest.fixture
def ml_100k(tmp_path: Path) -> Path:
    write(tmp_path / "u.data",
          "196\t242\t3\t881250949\n"
          "186\t302\t3\t891717742\n"
          "22\t377\t1\t878887116\n"
          "22\t1000\t5\t878887117\n"
          "\n"                         # line 5: blank
          "7\t242\t4\n")               # line 6: three fields
    url = "http://us.imdb.com/M/title-exact?x"
    write(tmp_path / "u.item",
          f"242|Kolya (1996)|24-Jan-1997||{url}|{flags(5)}\n"
          f"302|L.A. Confidential (1997)|01-Jan-1997||{url}|{flags(6, 10, 13, 16)}\n"
          f"377|Heavyweights (1994)|01-Jan-1994||{url}|{flags(4, 5)}\n"
          f"1000|Café au Lait (1994)|01-Jan-1994||{url}|{flags(0)}\n",
          encoding="latin-1")
    return tmp_path


def test_ml_100k_layout(ml_100k):
    r = load_source("movielens", ml_100k)
    assert r.stats["layout"] == "ml-100k"
    assert r.stats["rows_read"] == {"u.data": 6, "u.item": 4}
    assert r.interactions.rows() == [
        ("196", "242", dt.datetime(1997, 12, 4, 15, 55, 49), 3.0),
        ("186", "302", dt.datetime(1998, 4, 4, 19, 22, 22), 3.0),
        ("22", "377", dt.datetime(1997, 11, 7, 7, 18, 36), 1.0),
        ("22", "1000", dt.datetime(1997, 11, 7, 7, 18, 37), 5.0),
    ]
    assert by_id(r.items, "242")["text"] == "comedy, 1990s"
    assert by_id(r.items, "302")["text"] == "crime, film-noir, mystery, thriller, 1990s"
    assert by_id(r.items, "377")["text"] == "children's, comedy, 1990s"
    # latin-1 title decoded; the 'unknown' genre flag is not a genre
    assert by_id(r.items, "1000") == {"item_id": "1000", "title": "Café au Lait (1994)", "text": "1990s"}
    assert reasons(r) == [("u.data", 5, v.EMPTY_ROW), ("u.data", 6, f"{v.WRONG_FIELD_COUNT} (got 3, expected 4)")]
    assert json.loads(r.rejected["raw_row"][1]) == {"line": "7\t242\t4"}


def test_ml_100k_genre_names_come_from_u_genre(ml_100k):
    # indices decide, not line order; a renamed genre shows the file is read
    lines = ML100K_GENRE.replace("Comedy|5", "Funny|5").splitlines()
    write(ml_100k / "u.genre", "\n".join(reversed(lines)) + "\n")
    r = load_source("movielens", ml_100k)
    assert by_id(r.items, "377")["text"] == "children's, funny, 1990s"


def test_ml_100k_bad_u_genre(ml_100k):
    write(ml_100k / "u.genre", "Action|1\nComedy|5\n")
    with pytest.raises(IngestError, match=r"u\.genre: genre indices must be 0\.\.1"):
        load_source("movielens", ml_100k)


# ---- ratings.dat + movies.dat (+ tags.dat) (ml-1m / ml-10m) --------------------
@pytest.fixture
def ml_1m(tmp_path: Path) -> Path:
    write(tmp_path / "ratings.dat",
          "1::1193::5::978300760\n"
          "1::2::3::978302109\n"
          "2::73::4::978300761\r\n"     # Windows line ending
          "2::73::4::978300761\n"       # line 4: duplicate of line 3
          "3::2::x::978300762\n"        # line 5: non-numeric rating
          "::2::3::978300763\n"         # line 6: null user
          "4::2::3::never\n")           # line 7: unparsable timestamp
    write(tmp_path / "movies.dat",
          "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n"
          "2::Jumanji (1995)::Adventure|Children's|Fantasy\n"
          "73::Misérables, Les (1995)::Drama|Musical\n",
          encoding="latin-1")
    return tmp_path


def test_ml_1m_layout(ml_1m):
    r = load_source("movielens", ml_1m)
    assert r.stats["layout"] == "ml-1m"
    assert r.interactions.rows() == [
        ("1", "1193", dt.datetime(2000, 12, 31, 22, 12, 40), 5.0),
        ("1", "2", dt.datetime(2000, 12, 31, 22, 35, 9), 3.0),
        ("2", "73", dt.datetime(2000, 12, 31, 22, 12, 41), 4.0),
    ]
    assert by_id(r.items, "73") == {"item_id": "73", "title": "Misérables, Les (1995)",
                                    "text": "drama, musical, 1990s"}
    assert by_id(r.items, "2")["text"] == "adventure, children's, fantasy, 1990s"
    assert reasons(r) == [
        ("ratings.dat", 4, v.DUPLICATE_EVENT),
        ("ratings.dat", 5, v.NON_NUMERIC_ENGAGEMENT),
        ("ratings.dat", 6, v.NULL_USER_ID),
        ("ratings.dat", 7, v.UNPARSABLE_EVENT_TS),
    ]
    assert json.loads(r.rejected["raw_row"][2]) == {"user_id": "", "movie_id": "2", "rating": "3",
                                                    "timestamp": "978300763"}


def test_ml_10m_tags(ml_1m):
    write(ml_1m / "tags.dat", "15::2::Jungle::1215184630\n16::2::board game::1215184631\n17::2::jungle::1215184632\n")
    r = load_source("movielens", ml_1m)
    # 'jungle' (users 15 and 17) is shared; 'board game' (user 16 alone) is not
    assert by_id(r.items, "2")["text"] == "adventure, children's, fantasy, 1990s, jungle"
    assert r.stats["rows_read"]["tags.dat"] == 3


# ---- layout detection and errors ----------------------------------------------
def test_missing_directory_and_files(tmp_path):
    with pytest.raises(IngestError, match="needs a directory"):
        load_source("movielens", None)
    with pytest.raises(IngestError, match=r"does-not-exist: MovieLens directory does not exist; expected .*ratings\.csv \+ movies\.csv"):
        load_source("movielens", tmp_path / "does-not-exist")
    write(tmp_path / "ratings.csv", "userId,movieId,rating,timestamp\n")
    with pytest.raises(IngestError, match=r"found ratings\.csv but not movies\.csv.*expected ratings\.csv \+ movies\.csv.*u\.data \+ u\.item.*ratings\.dat \+ movies\.dat"):
        load_source("movielens", tmp_path)


def test_no_valid_interactions_is_an_error(ml_latest):
    write(ml_latest / "ratings.csv", "userId,movieId,rating,timestamp\n1,77,4.0,964982703\n")
    with pytest.raises(IngestError, match=r"no valid interactions remain.*'ratings\.csv': \{'unknown item_id': 1\}"):
        load_source("movielens", ml_latest)


# ---- the real data ------------------------------------------------------------
@pytest.mark.skipif(not ML_LATEST_SMALL.is_dir(), reason=f"MovieLens data not found at {ML_LATEST_SMALL}")
def test_real_ml_latest_small():
    r = load_source("movielens", ML_LATEST_SMALL)
    assert r.stats["rows_read"] == {"ratings.csv": 100_836, "movies.csv": 9_742, "tags.csv": 3_683}
    assert (r.interactions.height, r.items.height, r.rejected.height) == (100_836, 9_742, 0)
    assert r.interactions["user_id"].n_unique() == 610
    toy = by_id(r.items, "1")
    assert toy["title"] == "Toy Story (1995)"
    assert toy["text"].startswith("adventure, animation, children, comedy, fantasy, 1990s") and "pixar" in toy["text"]
    assert "Toy Story" not in toy["text"]
    assert by_id(r.items, "11")["title"] == "American President, The (1995)"
    assert by_id(r.items, "73")["title"] == "Misérables, Les (1995)"
    first = r.interactions.filter((pl.col("user_id") == "1") & (pl.col("item_id") == "1")).row(0)
    assert first == ("1", "1", dt.datetime(2000, 7, 30, 18, 45, 3), 4.0)
    assert set(r.interactions["engagement"].unique().to_list()) <= {x / 2 for x in range(1, 11)}

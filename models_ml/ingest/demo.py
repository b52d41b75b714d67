"""Seeded, deterministic demo data: a catalog over 40 themes in 8 categories and users
whose histories follow interest journeys with structured transitions.

Environment variables (this module is their one home; ``generate()`` reads them
for any argument left as None):

- ``IE_DEMO_USERS``  number of users (default 2000); every user has events
- ``IE_DEMO_ITEMS``  number of items (default 2000; at least the 40 themes)
- ``IE_DEMO_EVENTS`` number of events in total (default 200000, exact)
- ``IE_DEMO_SEED``   random seed (default 7); the same seed gives identical frames

The world:
- Items: each belongs to one theme (e.g. "sourdough baking" in "food and cooking").
  Text = the item's metadata terms: 4 theme words, 2 category words, a format and 3
  generic words shared by all themes (the title is built from them but kept out of the
  text); 10% of items borrow a word from a sibling theme, and some themes share words
  ("crust", "climbing", "river"), so clustering is not trivial.
- Theme transitions: each theme has 2-4 preferred successors (75% within its
  category), and each history (a, b) has its own preferred next theme, drawn once
  from succ(a) + succ(b). When a user moves on from the last two themes (a, b), the
  next theme is drawn from ``0.40 * succ(b) + 0.45 * pair(a, b) + 0.15 * uniform``,
  excluding a and b: predictable from b, better from (a, b). With probability
  :data:`P_REVISIT` the user returns to a theme seen before instead.
- Users: activity is log-normal (heavy-tailed, at least 5 events when the totals
  allow), a user dwells in a theme for a geometric number of events (mean grows with
  the user's activity), and :data:`P_NOISE` of events are off-interest picks.
  Ratings are 1.0-5.0 in 0.5 steps; in-interest events are positive (>= 4.0) 80% of
  the time, off-interest ones 12%. Timestamps increase strictly per user within 2023.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import string
import time

import numpy as np
import polars as pl

from models_ml import config
from models_ml.ingest import validate as v

DEFAULT_USERS = 2000
DEFAULT_ITEMS = 2000
DEFAULT_EVENTS = 200_000
DEFAULT_SEED = 7

P_REVISIT = 0.3  # a segment returns to an already-seen theme
P_NOISE = 0.05  # an event is an off-interest pick from a random theme
P_EXPLORE = 0.15  # uniform share of the next-theme distribution
W_LAST, W_PAIR = 0.40, 0.45  # weights of succ(b) and of the pair's own successor for history (a, b)
MIN_EVENTS_PER_USER = 5
START = dt.datetime(2023, 1, 1)
YEAR_S = 365 * 24 * 3600
RATINGS = np.arange(1.0, 5.01, 0.5)
P_RATING_IN = np.array([0.01, 0.01, 0.02, 0.03, 0.05, 0.08, 0.30, 0.25, 0.25])  # 80% >= 4.0
P_RATING_OUT = np.array([0.14, 0.10, 0.16, 0.14, 0.18, 0.16, 0.06, 0.03, 0.03])  # 12% >= 4.0
SUCCESSOR_WEIGHTS = {2: (0.65, 0.35), 3: (0.5, 0.3, 0.2), 4: (0.4, 0.3, 0.2, 0.1)}

# category -> (category words, {theme: theme words})
CATALOG: dict[str, tuple[tuple[str, ...], dict[str, tuple[str, ...]]]] = {
    "food and cooking": (
        ("kitchen", "recipe", "cooking", "flavor", "ingredients", "chef", "homemade", "meal"),
        {
            "sourdough baking": ("sourdough", "starter", "levain", "hydration", "crumb", "crust", "proofing",
                                 "flour", "loaf", "banneton", "scoring", "fermentation"),
            "pizza making": ("pizza", "dough", "mozzarella", "neapolitan", "oven", "tomato sauce", "crust", "basil",
                             "pizza stone", "toppings", "pepperoni", "wood-fired"),
            "vegan cooking": ("vegan", "tofu", "chickpeas", "lentils", "plant-based", "tempeh", "cashew cream",
                              "nutritional yeast", "vegetables", "seitan", "legumes", "dairy-free"),
            "coffee brewing": ("espresso", "pour-over", "grinder", "coffee beans", "roast", "crema", "aeropress",
                               "latte", "barista", "extraction", "arabica", "french press"),
            "home fermentation": ("kimchi", "sauerkraut", "kombucha", "brine", "lacto-fermentation", "cabbage",
                                  "probiotics", "mason jars", "scoby", "pickles", "miso", "fermentation"),
        },
    ),
    "fitness and sports": (
        ("training", "workout", "athlete", "fitness", "coach", "endurance", "performance", "exercise"),
        {
            "marathon training": ("marathon", "running", "long run", "tempo run", "pace", "race day", "mileage",
                                  "taper", "running shoes", "half marathon", "intervals", "finish line"),
            "yoga practice": ("yoga", "asana", "vinyasa", "meditation", "breathwork", "flexibility", "yoga mat",
                              "downward dog", "mindfulness", "poses", "stretching", "balance"),
            "strength training": ("barbell", "deadlift", "squat", "bench press", "powerlifting", "hypertrophy",
                                  "sets and reps", "protein", "dumbbells", "muscle", "gym", "progressive overload"),
            "road cycling": ("cycling", "road bike", "climbing", "cadence", "peloton", "saddle", "gears", "watts",
                             "tour de france", "helmet", "sprint", "bike"),
            "rock climbing": ("rock climbing", "bouldering", "crag", "belay", "harness", "chalk", "route",
                              "carabiner", "crimp", "rope", "climbing", "lead climbing"),
        },
    ),
    "music": (
        ("music", "song", "musician", "melody", "rhythm", "practice", "band", "sound"),
        {
            "jazz guitar": ("jazz", "guitar", "chord voicings", "improvisation", "bebop", "swing", "archtop",
                            "scales", "jazz standards", "comping", "guitar solo", "blues"),
            "classical piano": ("piano", "chopin", "sonata", "etude", "beethoven", "keyboard", "sustain pedal",
                                "sight-reading", "concerto", "bach", "nocturne", "scales"),
            "music production": ("synthesizer", "daw", "mixing", "mastering", "beats", "sampler", "drum machine",
                                 "plugins", "producer", "ableton", "bassline", "home studio"),
            "drumming": ("drums", "snare", "cymbals", "groove", "drumsticks", "kick drum", "hi-hat", "drum fills",
                         "rudiments", "drum kit", "percussion", "tempo"),
            "songwriting": ("lyrics", "chorus", "verse", "songwriter", "hook", "chord progression", "acoustic guitar",
                            "demo recording", "rhyme", "bridge", "storytelling", "melody"),
        },
    ),
    "technology": (
        ("software", "computer", "code", "developer", "tech", "digital", "data", "programming"),
        {
            "python programming": ("python", "functions", "pandas", "scripts", "debugging", "libraries", "classes",
                                   "loops", "jupyter", "pip", "modules", "unit tests"),
            "machine learning": ("machine learning", "neural network", "model training", "datasets",
                                 "deep learning", "gradient descent", "classification", "pytorch", "features",
                                 "overfitting", "transformers", "embeddings"),
            "smart home automation": ("smart home", "home assistant", "sensors", "zigbee", "automation",
                                      "smart lights", "thermostat", "raspberry pi", "voice assistant", "smart plugs",
                                      "routines", "wifi"),
            "retro gaming": ("retro games", "consoles", "nintendo", "arcade", "emulator", "cartridges", "pixel art",
                             "sega", "joystick", "speedrun", "8-bit", "game boy"),
            "cybersecurity": ("security", "passwords", "encryption", "malware", "firewall", "phishing", "hacking",
                              "vulnerability", "vpn", "two-factor", "penetration testing", "privacy"),
        },
    ),
    "outdoors and nature": (
        ("outdoors", "nature", "trail", "wildlife", "wilderness", "weather", "landscape", "adventure"),
        {
            "backpacking and hiking": ("hiking", "backpacking", "tent", "summit", "backpack", "campsite",
                                       "hiking boots", "trekking poles", "trail map", "ultralight", "switchbacks",
                                       "camping"),
            "birdwatching": ("birds", "birdwatching", "binoculars", "warbler", "migration", "birdsong",
                             "field guide", "hawk", "owl", "bird feeder", "nesting", "species"),
            "vegetable gardening": ("garden", "tomatoes", "seedlings", "compost", "raised beds", "soil", "harvest",
                                    "watering", "mulch", "seeds", "herbs", "pests"),
            "fly fishing": ("fly fishing", "trout", "fly rod", "river", "casting", "flies", "reel", "streams",
                            "waders", "fly tying", "salmon", "catch and release"),
            "stargazing": ("telescope", "stars", "astronomy", "planets", "night sky", "constellations", "galaxy",
                           "moon", "nebula", "astrophotography", "meteor shower", "dark sky"),
        },
    ),
    "arts and crafts": (
        ("handmade", "craft", "art", "creative", "studio", "design", "artist", "diy"),
        {
            "watercolor painting": ("watercolor", "brushes", "pigments", "painting", "palette", "washes",
                                    "cotton paper", "landscapes", "color mixing", "sketch", "illustration",
                                    "wet-on-wet"),
            "knitting": ("knitting", "yarn", "needles", "stitches", "sweater", "wool", "knitting pattern", "scarf",
                         "purl", "cable knit", "crochet", "socks"),
            "woodworking": ("woodworking", "lumber", "chisel", "joinery", "table saw", "sanding", "dovetail",
                            "workbench", "hand plane", "furniture", "walnut", "wood finish"),
            "pottery": ("pottery", "clay", "wheel throwing", "kiln", "glaze", "ceramics", "bowls", "mugs",
                        "stoneware", "trimming", "porcelain", "firing"),
            "film photography": ("film camera", "35mm", "darkroom", "exposure", "lens", "aperture",
                                 "black and white", "negatives", "rangefinder", "shutter speed", "portrait",
                                 "film grain"),
        },
    ),
    "travel and languages": (
        ("travel", "trip", "culture", "journey", "destination", "abroad", "itinerary", "tourism"),
        {
            "japan travel": ("japan", "tokyo", "kyoto", "ramen", "temples", "shinkansen", "onsen", "sushi", "osaka",
                             "cherry blossom", "ryokan", "shrines"),
            "learning spanish": ("spanish", "vocabulary", "grammar", "conjugation", "fluency", "pronunciation",
                                 "language learning", "conversation", "verbs", "madrid", "mexico", "flashcards"),
            "road trips": ("road trip", "car", "highway", "motel", "route 66", "national parks", "gas station",
                           "scenic drive", "camper van", "roadside diner", "driving playlist", "road map"),
            "european city breaks": ("paris", "rome", "barcelona", "museums", "cafes", "old town", "cathedrals",
                                     "night trains", "hostels", "walking tour", "amsterdam", "piazza"),
            "world history": ("history", "empire", "ancient rome", "medieval", "archaeology", "castles", "dynasty",
                              "war", "civilization", "ruins", "historians", "artifacts"),
        },
    ),
    "games and puzzles": (
        ("game", "play", "strategy", "players", "puzzle", "win", "competition", "fun"),
        {
            "chess": ("chess", "openings", "endgame", "checkmate", "grandmaster", "sicilian defense", "gambit",
                      "tactics", "pawn", "knight", "elo rating", "blitz"),
            "board games": ("board games", "dice", "cards", "meeples", "catan", "tabletop", "expansion",
                            "game night", "deck building", "cooperative", "worker placement", "rulebook"),
            "crossword puzzles": ("crossword", "clues", "puzzles", "anagrams", "wordplay", "grid", "cryptic",
                                  "vocabulary", "sunday puzzle", "answers", "letters", "riddles"),
            "speedcubing": ("rubik's cube", "speedcubing", "algorithms", "solve", "cube", "f2l", "lookahead",
                            "timer", "fingertricks", "scramble", "world record", "oll"),
            "poker strategy": ("poker", "texas hold'em", "bluffing", "chips", "odds", "pot", "bankroll", "all-in",
                               "tells", "flop", "river", "tournament"),
        },
    ),
}
GENERIC_WORDS = (
    "beginner", "advanced", "weekly", "tips", "review", "ideas", "community", "gear", "budget", "mistakes",
    "favorite", "essentials", "journal", "lessons", "basics", "challenge", "season", "friends", "family",
    "morning", "weekend", "project", "podcast", "interview", "checklist", "collection", "starter kit",
    "deep dive", "quick", "simple", "honest", "first steps", "routine", "questions", "experiment", "habits",
    "explained", "myths", "progress",
)
FORMATS = ("guide", "notes", "handbook", "podcast episode", "video", "workshop", "field notes", "primer",
           "masterclass", "diary", "newsletter", "tutorial")
PROSE_TEMPLATES = 5  # item texts were once one of 5 prose templates: the draw stays, so a seed gives the same events
TITLES = ("{T0} {Tfmt}", "The {T0} {Tfmt}: {T1} and {T2}", "{T0} and {T1}", "A {Tfmt} for {T0}",
          "{T0}, {T1} and {T2}", "Notes on {T0} and {T1}")

N_THEMES = sum(len(t) for _, t in CATALOG.values())


def themes() -> pl.DataFrame:
    """theme_idx, theme, category_idx, category (theme_idx = order in CATALOG)."""
    rows = [(c_idx, cat, theme) for c_idx, (cat, (_, th)) in enumerate(CATALOG.items()) for theme in th]
    return pl.DataFrame(
        {"theme_idx": list(range(len(rows))), "theme": [r[2] for r in rows],
         "category_idx": [r[0] for r in rows], "category": [r[1] for r in rows]},
        schema_overrides={"theme_idx": pl.Int32, "category_idx": pl.Int32},
    )


def successor_table(rng: np.random.Generator) -> np.ndarray:
    """(T, T) preferred-successor weights: 2-4 successors per theme, 75% within the category."""
    cat = themes()["category_idx"].to_numpy()
    table = np.zeros((N_THEMES, N_THEMES))
    for t in range(N_THEMES):
        same = [s for s in np.flatnonzero(cat == cat[t]) if s != t]
        other = list(np.flatnonzero(cat != cat[t]))
        n = int(rng.integers(2, 5))
        chosen: list[int] = []
        while len(chosen) < n:
            pool = same if (rng.random() < 0.75 and len(set(same) - set(chosen))) else other
            cand = [s for s in pool if s not in chosen]
            chosen.append(int(rng.choice(cand)))
        table[t, chosen] = SUCCESSOR_WEIGHTS[n]
    return table


def pair_prior(succ: np.ndarray, a: int, b: int) -> np.ndarray:
    """The distribution history (a, b)'s preferred next theme is drawn from: succ(a) +
    succ(b) without a and b, normalised (uniform outside a and b if that leaves nothing)."""
    w = succ[a] + succ[b]
    w[[a, b]] = 0.0
    if w.sum() == 0:  # succ(a) and succ(b) hold only a and b
        w = np.ones(succ.shape[0])
        w[[a, b]] = 0.0
    return w / w.sum()


def pair_successors(rng: np.random.Generator, succ: np.ndarray) -> np.ndarray:
    """(T, T) the preferred next theme of history (a, b), drawn from pair_prior, so people
    who came to b from a lean one way."""
    n = succ.shape[0]
    out = np.empty((n, n), dtype=np.int64)
    for a in range(n):
        for b in range(n):
            out[a, b] = rng.choice(n, p=pair_prior(succ, a, b))
    return out


def transition_tensor(succ: np.ndarray, pair: np.ndarray) -> np.ndarray:
    """P[a, b, :] = next-theme distribution after history (a, b); a = b means a single
    theme so far."""
    n = succ.shape[0]
    p = W_LAST * np.broadcast_to(succ, (n, n, n)) + P_EXPLORE / n
    a_idx, b_idx = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    p[a_idx, b_idx, pair] += W_PAIR
    idx = np.arange(n)
    p[idx, idx] = (W_LAST + W_PAIR) * succ + P_EXPLORE / n
    p[idx, :, idx] = 0.0  # never "move" to a
    p[:, idx, idx] = 0.0  # ... or stay in b
    return p / p.sum(axis=2, keepdims=True)


def _user_counts(rng: np.random.Generator, n_users: int, n_events: int) -> np.ndarray:
    """Heavy-tailed events per user summing exactly to n_events."""
    floor = min(MIN_EVENTS_PER_USER, n_events // n_users)
    w = rng.lognormal(0.0, 1.1, n_users)
    w = np.minimum(w, 20 * w.mean())
    extra = n_events - floor * n_users
    share = w / w.sum() * extra
    counts = np.floor(share).astype(np.int64)
    rest = extra - counts.sum()
    counts[np.argsort(-(share - counts), kind="stable")[:rest]] += 1  # largest remainders
    return counts + floor


def _journeys(rng: np.random.Generator, counts: np.ndarray, p: np.ndarray, pop: np.ndarray) -> np.ndarray:
    """Theme of every event (users in order), built segment by segment."""
    cdf = np.cumsum(p, axis=2)
    pop_cdf = np.cumsum(pop) / pop.sum()
    # at most one segment per event: draw every random number the loop may use up front
    n_draws = int(counts.sum()) + len(counts)
    expo = rng.exponential(1.0, n_draws)
    unif = rng.random((n_draws, 2))
    out = np.empty(int(counts.sum()), dtype=np.int64)
    pos = k = 0
    for n in counts.tolist():
        dwell = min(max(1.5 * np.sqrt(n), 4.0), 40.0)
        scale = -1.0 / np.log1p(-1.0 / dwell)  # geometric length with mean `dwell`, from an exponential
        a = b = min(int(np.searchsorted(pop_cdf, unif[k, 0], side="right")), N_THEMES - 1)
        seen, done = [b], 0
        while True:
            length = min(1 + int(expo[k] * scale), n - done)
            out[pos + done: pos + done + length] = b
            done += length
            k += 1
            if done >= n:
                break
            r_revisit, r_next = unif[k]
            others = [t for t in seen if t != b]
            if others and r_revisit < P_REVISIT:
                nxt = others[int(r_revisit / P_REVISIT * len(others))]
            else:
                row = cdf[a, b]
                nxt = min(int(np.searchsorted(row, r_next * row[-1], side="right")), N_THEMES - 1)
                if nxt not in seen:
                    seen.append(nxt)
            a, b = b, nxt
        pos += n
    return out


def _items(
    rng: np.random.Generator, n_items: int
) -> tuple[pl.DataFrame, np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Items (item_id, title, text), the theme of each item, and (item indices grouped
    by theme, each theme's offset into them, theme sizes)."""
    meta = themes()
    theme_names, cat_idx = meta["theme"].to_list(), meta["category_idx"].to_list()
    cats = list(CATALOG.values())
    sizes = np.full(N_THEMES, n_items // N_THEMES)
    sizes[: n_items % N_THEMES] += 1
    item_theme = np.repeat(np.arange(N_THEMES), sizes)
    width = len(str(n_items))
    ids = [f"i{str(i + 1).zfill(width)}" for i in range(n_items)]
    order = rng.permutation(n_items)  # item ids are not grouped by theme
    titles, texts = [None] * n_items, [None] * n_items
    for k in range(n_items):
        t = int(item_theme[k])
        cat_words, theme_words = cats[cat_idx[t]][0], cats[cat_idx[t]][1][theme_names[t]]
        words = [theme_words[i] for i in rng.choice(len(theme_words), 4, replace=False)]
        if rng.random() < 0.10:  # borrow a sibling theme's word
            sib = [s for s in range(N_THEMES) if cat_idx[s] == cat_idx[t] and s != t]
            sw = cats[cat_idx[t]][1][theme_names[int(rng.choice(sib))]]
            words[3] = sw[int(rng.integers(len(sw)))]
        cw = [cat_words[i] for i in rng.choice(len(cat_words), 2, replace=False)]
        gw = [GENERIC_WORDS[i] for i in rng.choice(len(GENERIC_WORDS), 3, replace=False)]
        fmt = FORMATS[int(rng.integers(len(FORMATS)))]
        fill = {"fmt": fmt, "Fmt": fmt[:1].upper() + fmt[1:]}
        for prefix, seq in (("w", words), ("c", cw), ("g", gw)):
            for i, w in enumerate(seq):
                fill[f"{prefix}{i}"] = w
                fill[f"{prefix.upper()}{i}"] = w[:1].upper() + w[1:]
        fill.update({f"T{i}": string.capwords(w) for i, w in enumerate(words)}, Tfmt=string.capwords(fmt))
        title = TITLES[int(rng.integers(len(TITLES)))].format(**fill)
        rng.integers(PROSE_TEMPLATES)
        # the item's metadata terms (what clustering reads); the title stays out of it
        titles[order[k]], texts[order[k]] = title, ", ".join([*words, *cw, fmt, *gw])
    theme_of_id = np.empty(n_items, dtype=np.int64)
    theme_of_id[order] = item_theme
    items = pl.DataFrame({"item_id": ids, "title": titles, "text": texts})
    # item indices grouped by theme (id order within a theme)
    by_theme = np.argsort(theme_of_id, kind="stable")
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    return items, theme_of_id, (by_theme, offsets, sizes)


@dataclasses.dataclass(frozen=True)
class DemoWorld:
    """One seed's world: its items, theme transitions and start themes. generate() draws
    its users from it; bench/demo_ceiling.py draws a fresh, larger population from the
    same world to judge lookups against the best a history-level lookup can do."""

    items: pl.DataFrame  # item_id, title, text
    theme_of_item: np.ndarray  # theme index of each row of items
    by_theme: np.ndarray  # item indices grouped by theme
    offsets: np.ndarray  # each theme's offset into by_theme
    sizes: np.ndarray  # items per theme
    succ: np.ndarray  # (T, T) preferred-successor weights, successor_table
    pair: np.ndarray  # (T, T) each history's preferred next theme, pair_successors
    start: np.ndarray  # start probability of each theme

    @functools.cached_property
    def p(self) -> np.ndarray:
        """P[a, b, :], transition_tensor(succ, pair)."""
        return transition_tensor(self.succ, self.pair)

    @classmethod
    def draw(cls, rng: np.random.Generator, n_items: int) -> DemoWorld:
        """generate()'s first draws, in its order."""
        items, theme_of_item, (by_theme, offsets, sizes) = _items(rng, n_items)
        succ = successor_table(rng)
        pair = pair_successors(rng, succ)
        pop = 1.0 / (rng.permutation(N_THEMES) + 3.0) ** 0.8  # some themes are more popular starts
        return cls(items, theme_of_item, by_theme, offsets, sizes, succ, pair, pop / pop.sum())

    def with_pairs(self, pair: np.ndarray) -> DemoWorld:
        """The same world with other preferred next themes per history: what a learner who
        knows everything but each history's own draw must still tell apart."""
        return dataclasses.replace(self, pair=pair)

    @classmethod
    def of_seed(cls, seed: int | None = None, n_items: int | None = None) -> DemoWorld:
        """The world generate() uses for a seed (defaults as generate())."""
        n_items = n_items if n_items is not None else config.env_int("IE_DEMO_ITEMS", DEFAULT_ITEMS)
        seed = seed if seed is not None else config.env_int("IE_DEMO_SEED", DEFAULT_SEED)
        return cls.draw(np.random.default_rng(seed), n_items)

    def events(self, rng: np.random.Generator, n_users: int, n_events: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(user index, item index, rating) of every event of n_users users, users in
        order and each user's events in time order."""
        counts = _user_counts(rng, n_users, n_events)
        theme = _journeys(rng, counts, self.p, self.start)
        # off-interest picks: a random other theme, rated lower
        noise = rng.random(n_events) < P_NOISE
        shift = rng.integers(1, N_THEMES, n_events)
        event_theme = np.where(noise, (theme + shift) % N_THEMES, theme)
        # popularity within a theme: index ~ size * u^2 (the first items of a theme are popular)
        size = self.sizes[event_theme]
        rank = np.minimum((size * rng.random(n_events) ** 2).astype(np.int64), size - 1)
        item_idx = self.by_theme[self.offsets[event_theme] + rank]
        rating = np.where(
            noise,
            rng.choice(RATINGS, n_events, p=P_RATING_OUT),
            rng.choice(RATINGS, n_events, p=P_RATING_IN),
        )
        return np.repeat(np.arange(n_users), counts), item_idx, rating


def generate(
    n_users: int | None = None, n_items: int | None = None, n_events: int | None = None, seed: int | None = None
) -> v.IngestResult:
    """Demo interactions and items (see the module docstring); ``truth`` holds each
    item's theme and category."""
    n_users = n_users if n_users is not None else config.env_int("IE_DEMO_USERS", DEFAULT_USERS)
    n_items = n_items if n_items is not None else config.env_int("IE_DEMO_ITEMS", DEFAULT_ITEMS)
    n_events = n_events if n_events is not None else config.env_int("IE_DEMO_EVENTS", DEFAULT_EVENTS)
    seed = seed if seed is not None else config.env_int("IE_DEMO_SEED", DEFAULT_SEED)
    if n_users < 1:
        raise ValueError(f"IE_DEMO_USERS must be at least 1, got {n_users}")
    if n_items < N_THEMES:
        raise ValueError(f"IE_DEMO_ITEMS must be at least the {N_THEMES} demo themes, got {n_items}")
    if n_events < n_users:
        raise ValueError(f"IE_DEMO_EVENTS ({n_events}) must be at least IE_DEMO_USERS ({n_users}): every user has events")
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)

    world = DemoWorld.draw(rng, n_items)
    items, theme_of_item = world.items, world.theme_of_item
    user_of, item_idx, rating = world.events(rng, n_users, n_events)
    counts = np.bincount(user_of, minlength=n_users)
    # timestamps: each user active over part of 2023, gaps exponential, +1 s per event keeps them strictly increasing
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    begin = rng.uniform(0.0, 0.6, n_users) * YEAR_S
    span = rng.uniform(0.25, 1.0, n_users) * (YEAR_S - begin - counts)
    csum = np.cumsum(rng.exponential(1.0, n_events))
    before = np.concatenate([[0.0], csum])[starts]
    total = csum[starts + counts - 1] - before + rng.exponential(1.0, n_users)
    frac = (csum - before[user_of]) / total[user_of]
    pos_in_user = np.arange(n_events) - starts[user_of]
    secs = (begin[user_of] + np.floor(frac * span[user_of]) + pos_in_user).astype(np.int64)

    interactions = pl.DataFrame({
        "user_id": "u" + pl.Series(user_of + 1).cast(pl.Utf8).str.zfill(len(str(n_users))),
        "item_id": items["item_id"].gather(item_idx),
        "event_ts": pl.Series(secs * 1_000_000 + _unix_us(START)).cast(pl.Datetime("us")),
        "engagement": rating,
    })
    meta = themes()
    truth = pl.DataFrame({"item_id": items["item_id"], "theme_idx": theme_of_item.astype(np.int32)}).join(
        meta, on="theme_idx", how="left", maintain_order="left"
    )
    gen_s = time.perf_counter() - t0

    checked = v.validate_items(
        items, "demo:items", item_id="item_id", title="title", text="text", raw_cols=items.columns
    )
    kept, inter_rej = v.validate_interactions(
        interactions, "demo:interactions", user_id="user_id", item_id="item_id", event_ts="event_ts",
        engagement="engagement", raw_cols=interactions.columns, known_items=checked.items["item_id"],
        rejected_items=checked.rejected_ids,
    )
    return v.finalize(
        "demo", None, items=checked.items, interactions=kept, rejected=[checked.rejected, inter_rej],
        rows_read={"demo:interactions": interactions.height, "demo:items": items.height},
        notes={**checked.notes, "seed": seed, "themes": N_THEMES, "categories": len(CATALOG),
               "generate_s": round(gen_s, 3)},
        truth=truth,
    )


def _unix_us(ts: dt.datetime) -> int:
    return int((ts - dt.datetime(1970, 1, 1)).total_seconds()) * 1_000_000

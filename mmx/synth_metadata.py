"""Synthetic title metadata: plots, posters, years and runtimes for the synthetic archives.

Owns what :func:`mmx.synth.write_metadata` writes into a synthetic archive's sidecar
(``metadata.csv`` and ``posters/<trailer_id>.jpg``, read by :mod:`mmx.metadata`): metadata
correlated with a title's true genres and hidden sub-genre, but noisy, as real metadata is:

* **plots**: 2-4 sentence synopses from templates whose slots take words of the title's genres
  (roles, events, tones), of its sub-genre's content style (the setting as a place, the
  recurring object, the music's mood as a tone word), generic words shared by every genre, and
  misleading words of a genre the title is not. Genre names never appear as words.
* **posters**: 160x240 images in a genre's colours with the sub-genre's setting, motif and
  colour grade (:mod:`mmx.synth_styles`), some in another genre's colours, with a title band,
  brightness jitter and noise.
* **years and runtimes**: genre-dependent distributions that overlap, shifted per style.
* **missing fields**: some titles have no plot, no poster, no year or no runtime, and a share
  is absent from the sidecar altogether.

Everything is drawn from ``(seed, trailer_id)`` alone, so a title's metadata does not depend on
the other titles, and no video is needed (:class:`TitleSpec` is all it reads). The sidecar
never names a genre or a sub-genre as a column: the truth stays in ``truth.json``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from mmx import synth_styles
from mmx.synth_styles import ContentStyle

POSTER_SIZE = (160, 240)  # width, height in pixels
COLUMNS = ("trailer_id", "title", "plot", "year", "runtime_min", "poster")


@dataclass(frozen=True)
class MetadataCues:
    """How strong and how complete the synthetic metadata is (shares are probabilities)."""

    absent: float = 0.1  # titles missing from the sidecar altogether
    no_plot: float = 0.15
    no_poster: float = 0.2
    no_year: float = 0.15
    no_runtime: float = 0.1
    content: float = 0.6  # a place/object/tone slot takes the sub-genre's word
    mislead: float = 0.12  # a genre slot takes a word of a genre the title is not
    generic: float = 0.2  # a genre slot takes a word every genre shares
    poster_off_genre: float = 0.25  # poster in a random genre's colours
    poster_content: float = 0.7  # poster shows the sub-genre's setting and motif


@dataclass(frozen=True)
class TitleSpec:
    """What a title's metadata is drawn from: its true genres and its sub-genre's content
    style (None: the archive has no sub-genres)."""

    trailer_id: str
    genres: tuple[str, ...]
    content: ContentStyle | None = None


# ------------------------------------------------------------------------------ vocabulary
# genre → (roles, events/things, tones). Related genres share words, as real synopses do.
GENRE_WORDS: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    "Action": (("agent", "bodyguard", "getaway driver", "mercenary"),
               ("explosion", "chase", "heist", "showdown", "convoy", "hostage crisis"),
               ("relentless", "explosive")),
    "Comedy": (("stand-up comic", "hapless groom", "slacker", "wedding planner"),
               ("mix-up", "prank", "road trip", "bet", "disastrous dinner", "talent show"),
               ("hilarious", "awkward")),
    "Drama": (("widow", "teacher", "estranged son", "nurse"),
              ("illness", "inheritance", "divorce", "memory", "funeral", "confession"),
              ("intimate", "moving")),
    "Horror": (("babysitter", "priest", "caretaker", "new tenant"),
               ("curse", "possession", "ritual", "creature", "haunting", "scream"),
               ("terrifying", "blood-soaked")),
    "Romance": (("bride", "florist", "lover", "pen pal"),
                ("first kiss", "love letter", "engagement", "summer affair", "heartbreak",
                 "wedding"),
                ("tender", "passionate")),
    "Sci-Fi": (("android", "astronaut", "scientist", "clone"),
               ("experiment", "signal", "time machine", "artificial mind", "mutation",
                "colony"),
               ("visionary", "futuristic")),
    "Adventure": (("explorer", "treasure hunter", "young sailor", "guide"),
                  ("expedition", "lost map", "treasure", "quest", "voyage", "jungle"),
                  ("daring", "epic")),
    "Animation": (("talking fox", "little robot", "young dragon", "toy"),
                  ("magic kingdom", "friendship", "talking animals", "enchanted toys",
                   "song"),
                  ("colourful", "whimsical")),
    "Biography": (("inventor", "champion", "painter", "senator"),
                  ("true story", "career", "legacy", "rise to fame", "early life", "scandal"),
                  ("inspiring", "remarkable")),
    "Crime": (("detective", "mob boss", "getaway driver", "informant"),
              ("murder", "heist", "gang", "cartel", "corruption", "trial"),
              ("gritty", "ruthless")),
    "Documentary": (("filmmaker", "witnesses", "researchers", "archivist"),
                    ("interviews", "archive footage", "investigation", "true events",
                     "testimony"),
                    ("revealing", "unflinching")),
    "Family": (("grandfather", "kids", "puppy", "single dad"),
               ("holiday", "reunion", "lost dog", "school play", "summer camp",
                "sleepover"),
               ("heartwarming", "playful")),
    "Fantasy": (("wizard", "princess", "knight", "sorceress"),
                ("spell", "prophecy", "dragon", "enchanted sword", "kingdom", "magic"),
                ("magical", "mythic")),
    "History": (("emperor", "queen", "general", "revolutionary"),
                ("empire", "revolution", "dynasty", "treaty", "uprising", "crown"),
                ("sweeping", "historic")),
    "Musical": (("singer", "dancer", "composer", "chorus girl"),
                ("song", "audition", "opening night", "dance number", "stage", "band"),
                ("dazzling", "joyous")),
    "Mystery": (("detective", "journalist", "heiress", "amateur sleuth"),
                ("disappearance", "clue", "secret", "riddle", "missing letter", "alibi"),
                ("puzzling", "enigmatic")),
    "Sport": (("coach", "boxer", "rookie", "striker"),
              ("championship", "final match", "training", "comeback", "season", "tournament"),
              ("triumphant", "gruelling")),
    "Thriller": (("agent", "witness", "hacker", "fugitive"),
                 ("conspiracy", "kidnapping", "countdown", "stalker", "cover-up", "ransom"),
                 ("tense", "gripping")),
    "War": (("soldier", "pilot", "medic", "sergeant"),
            ("battle", "front line", "invasion", "trenches", "platoon", "siege"),
            ("harrowing", "brutal")),
    "Western": (("sheriff", "outlaw", "gunslinger", "rancher"),
                ("frontier", "cattle drive", "saloon", "bounty", "stagecoach", "duel"),
                ("dusty", "lawless")),
}
GENERIC_WORDS = (("young woman", "man", "household", "stranger", "teenager", "couple"),
                 ("secret", "past", "promise", "choice", "journey", "truth", "night", "friend"),
                 ("unforgettable", "bold", "surprising"))
GENERIC_PLACES = ("a small town", "the suburbs", "a crowded apartment block", "a quiet street")
SETTING_PLACES = {  # synth_styles.SETTINGS → places
    "skyline": ("the city", "a rooftop", "a skyscraper"),
    "horizon": ("the desert", "an endless highway", "the open plains"),
    "grid": ("a virtual world", "a neon arcade", "the network"),
    "starfield": ("deep space", "an orbital station", "a distant planet"),
    "waves": ("the coast", "a remote island", "a fishing harbour"),
    "forest": ("the woods", "a mountain village", "a forest cabin"),
    "tiles": ("a grand hotel", "a marble palace", "an old mansion"),
    "arches": ("a monastery", "a cathedral town", "an ancient cloister"),
}
MOTIF_OBJECTS = {  # synth_styles.MOTIFS → objects
    "star": ("a star-shaped badge", "a fallen star"),
    "triangle": ("a pyramid", "a triangular amulet"),
    "cross": ("a silver cross", "a crossroads"),
    "diamond": ("a stolen diamond", "a jewel"),
    "hexagon": ("a honeycomb", "a strange hive"),
    "crescent": ("the crescent moon", "a moon pendant"),
    "arrow": ("a broken arrow", "an old compass"),
    "bars": ("a prison cell", "an iron cage"),
}
GENERIC_OBJECTS = ("an old photograph", "a locked box", "a letter", "a key")
TIMBRE_TONES = {  # synth_styles.TIMBRES → tone words (the style's music as a mood)
    "square": ("retro", "pulsing"), "pluck": ("wistful", "delicate"),
    "bell": ("haunting", "dreamlike"), "organ": ("solemn", "gothic"),
    "pulse": ("restless", "nervous"),
}
POSSESSIVES = ("their", "the town's", "everyone's", "her brother's")
VERBS = ("returns to", "arrives in", "is stranded in", "grows up in", "hides out in",
         "takes a job in")
# genre → (mean release year, mean runtime in minutes)
GENRE_FACTS: dict[str, tuple[float, float]] = {
    "Action": (2005, 118), "Comedy": (2003, 98), "Drama": (1998, 115), "Horror": (2006, 92),
    "Romance": (1996, 108), "Sci-Fi": (2009, 120), "Adventure": (2001, 112),
    "Animation": (2011, 90), "Biography": (2008, 125), "Crime": (1997, 112),
    "Documentary": (2013, 95), "Family": (2006, 96), "Fantasy": (2007, 122),
    "History": (1993, 140), "Musical": (1980, 118), "Mystery": (1995, 105),
    "Sport": (2004, 110), "Thriller": (2004, 106), "War": (1988, 132), "Western": (1968, 110),
}


def _a(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _pick(rng: np.random.Generator, items: Sequence[str]) -> str:
    return items[int(rng.integers(len(items)))]


class _Words:
    """The word sources of one title: its genres, the other genres, generic, its style."""

    def __init__(self, rng: np.random.Generator, spec: TitleSpec, vocab: Sequence[str],
                 cues: MetadataCues) -> None:
        self.rng, self.spec, self.cues = rng, spec, cues
        own = [g for g in spec.genres if g in GENRE_WORDS]
        if not own:
            raise ValueError(f"{spec.trailer_id}: no known genre in {spec.genres}")
        self.own = own
        self.other = [g for g in vocab if g in GENRE_WORDS and g not in spec.genres]

    def genre(self, kind: int) -> str:
        """A role (0), event (1) or tone (2) word: mostly the title's genres, sometimes a
        generic word, sometimes another genre's (misleading)."""
        r = self.rng.random()
        if r < self.cues.mislead and self.other:
            return _pick(self.rng, GENRE_WORDS[_pick(self.rng, self.other)][kind])
        if r < self.cues.mislead + self.cues.generic:
            return _pick(self.rng, GENERIC_WORDS[kind])
        return _pick(self.rng, GENRE_WORDS[_pick(self.rng, self.own)][kind])

    def content(self, table: Mapping[str, Sequence[str]], key: str,
                fallback: Sequence[str]) -> str:
        style = self.spec.content
        if style is not None and self.rng.random() < self.cues.content:
            return _pick(self.rng, table[getattr(style, key)])
        return _pick(self.rng, fallback)


def synopsis(rng: np.random.Generator, spec: TitleSpec, vocab: Sequence[str],
             cues: MetadataCues) -> str:
    """A 2-4 sentence plot: a premise, then some of an inciting event, the object everything
    turns on, the tone, a twist (see the module docstring for where the words come from)."""
    w = _Words(rng, spec, vocab, cues)
    role = w.genre(0)
    place = w.content(SETTING_PLACES, "setting", GENERIC_PLACES)
    premise = f"{_a(role).capitalize()} {_pick(rng, VERBS)} {place}."
    whose = _pick(rng, POSSESSIVES)
    rest = [
        (f"When {_a(w.genre(1))} upends {whose} {_pick(rng, GENERIC_WORDS[1])}, the {role} "
         f"must face {_a(w.genre(1))}."),
        (f"Everything turns on {w.content(MOTIF_OBJECTS, 'motif', GENERIC_OBJECTS)} and "
         f"{_a(w.genre(1))}."),
        (f"{_a(w.content(TIMBRE_TONES, 'music_timbre', GENERIC_WORDS[2])).capitalize()}, "
         f"{w.genre(2)} tale of {_a(w.genre(1))} and {_a(w.genre(0))}."),
        f"With {_a(w.genre(0))} at their side, nothing about the {w.genre(1)} is what it seems.",
    ]
    k = int(rng.integers(1, 4))  # 1-3 more sentences
    chosen = sorted(rng.choice(len(rest), size=k, replace=False))
    return " ".join([premise, *(rest[i] for i in chosen)])


def title_of(rng: np.random.Generator, spec: TitleSpec, vocab: Sequence[str],
             cues: MetadataCues) -> str:
    """A short title from the title's words (weak signal, as real titles are)."""
    w = _Words(rng, spec, vocab, cues)
    noun = w.genre(1).title()
    return _pick(rng, (f"The {noun}", f"{noun}", f"The Last {noun}", f"{noun} Rising",
                       f"Night of the {noun}"))


def year_runtime(rng: np.random.Generator, spec: TitleSpec) -> tuple[int, float]:
    """Release year and runtime (minutes): the mean of the title's genres' facts, shifted per
    content style, with wide spreads so genres overlap."""
    facts = np.array([GENRE_FACTS[g] for g in spec.genres if g in GENRE_FACTS])  # (k, 2)
    year, minutes = facts.mean(axis=0)
    if spec.content is not None:
        year += (spec.content.index * 7) % 21 - 10
    year = int(np.clip(round(year + rng.normal(0, 12)), 1920, 2025))
    runtime = float(np.clip(round(minutes * float(np.exp(rng.normal(0, 0.12)))), 60, 240))
    return year, runtime


def poster(rng: np.random.Generator, spec: TitleSpec, vocab: Sequence[str],
           looks: Mapping[str, tuple[float, float, float]], cues: MetadataCues) -> np.ndarray:
    """A poster, uint8 (H, W, 3) RGB of :data:`POSTER_SIZE`: a gradient in a genre's colours
    (``looks``: genre → (hue, saturation, value)), the sub-genre's setting and motif, its
    colour grade, a title band, brightness jitter and noise."""
    width, height = POSTER_SIZE
    own = [g for g in spec.genres if g in looks] or list(looks)
    genre = (_pick(rng, list(looks)) if rng.random() < cues.poster_off_genre
             else _pick(rng, own))
    hue, sat, val = looks[genre]
    top = _rgb(hue + rng.normal(0, 0.03), sat, val)
    bottom = _rgb(hue + rng.normal(0, 0.08), sat, val * rng.uniform(0.2, 0.6))
    t = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]  # (H, 1, 1)
    img = (1 - t) * top + t * bottom  # (H, 1, 3)
    img = np.broadcast_to(img, (height, width, 3)).astype(np.float32)
    style = spec.content
    show = style is not None and rng.random() < cues.poster_content
    if show:
        colour, alpha = synth_styles.setting_layer(style, rng, height, width, height / 180.0,
                                                   top)
        img = img * (1 - alpha[..., None]) + colour * alpha[..., None]
    out = np.ascontiguousarray(np.clip(img, 0, 255).astype(np.uint8))  # (H, W, 3)
    if show:
        r = width * rng.uniform(0.18, 0.3) * style.motif_scale
        synth_styles.draw_motif(out, style.motif, width * rng.uniform(0.35, 0.65),
                                height * rng.uniform(0.3, 0.55), r, rng.uniform(0, 6.3),
                                synth_styles.motif_colour(style, rng))
        out = synth_styles.grade(out, synth_styles.grade_matrix(style, 0.8))
    band = int(height * rng.uniform(0.08, 0.14))  # the title band: dark strip, light "letters"
    y0 = int(rng.choice([int(height * 0.04), int(height * 0.82)]))
    out[y0:y0 + band] = (out[y0:y0 + band] * 0.25).astype(np.uint8)
    x = int(width * 0.1)
    while x < width * 0.9:
        w_letter = int(rng.integers(4, 10))
        out[y0 + band // 4:y0 + 3 * band // 4, x:x + w_letter] = 230
        x += w_letter + int(rng.integers(2, 5))
    noise = rng.normal(rng.normal(0, 12), 8, size=out.shape)
    return np.clip(out.astype(np.float32) + noise, 0, 255).astype(np.uint8)


def _rgb(h: float, s: float, v: float) -> np.ndarray:
    hsv = np.array([[[(h % 1.0) * 180.0, np.clip(s, 0, 1) * 255, np.clip(v, 0, 1) * 255]]],
                   np.float32)
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)


def jpeg(image: np.ndarray, quality: int = 85) -> bytes:
    """RGB uint8 image → JPEG bytes."""
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(image[:, :, ::-1]),
                           [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:  # pragma: no cover - cv2 encodes any uint8 image
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


def title_rng(seed: int, trailer_id: str) -> np.random.Generator:
    """The generator of one title's metadata: from the archive seed and its id only."""
    key = int.from_bytes(hashlib.sha256(trailer_id.encode("utf-8")).digest()[:8], "little")
    return np.random.default_rng([int(seed), 0x3E7A, key])


def draw_title(
    spec: TitleSpec, vocab: Sequence[str], seed: int, cues: MetadataCues,
    looks: Mapping[str, tuple[float, float, float]] | None = None,
) -> tuple[dict[str, object] | None, np.ndarray | None]:
    """One title's sidecar row (None: absent from the sidecar) and its poster image (None:
    no poster, or ``looks`` not given: rows only, no image drawn).

    The row's ``poster`` is ``posters/<trailer_id>.jpg`` when the title has one.
    """
    rng = title_rng(seed, spec.trailer_id)
    u = rng.random(5)  # (5,) which fields are missing, drawn first so they never move
    if u[0] < cues.absent:
        return None, None
    year, runtime = year_runtime(rng, spec)
    row: dict[str, object] = {
        "trailer_id": spec.trailer_id,
        "title": title_of(rng, spec, vocab, cues),
        "plot": synopsis(rng, spec, vocab, cues) if u[1] >= cues.no_plot else None,
        "year": year if u[2] >= cues.no_year else None,
        "runtime_min": runtime if u[3] >= cues.no_runtime else None,
        "poster": f"posters/{spec.trailer_id}.jpg" if u[4] >= cues.no_poster else None,
    }
    image = None
    if row["poster"] is not None and looks is not None:
        image = poster(rng, spec, vocab, looks, cues)
    return row, image

"""The language of an inbound message's text, for the case's acknowledgement and its pages.

py3langid (a maintained fork of langid.py: a naive Bayes model over byte n-grams, 4.5 MB,
numpy only), over all 97 languages it knows: a message in a language we have no catalogue
for (Italian, Japanese) is recognised as such and gets none, rather than being forced into
the nearest of ours. It was chosen by measuring
on tests/fixtures/languages/support_messages.tsv, 200 short support messages we wrote
(docs/architecture/languages.md has the figures): as accurate as lingua (200 of 200) at
half its time per message and a twentieth of its install size; langdetect missed 3 and was
40 times slower.

Runs in the parse step (normalizer/parse.py), under the parse budget, on at most
MAX_CHARS of the text. A text too short to tell, or one the model is not sure of, gets no
language (None): the worker then uses the contact's known language, else English.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from inbox.i18n import LANGUAGES

# The detector reads this much of a message: a language shows in its first lines, and the
# model's time grows with the text.
MAX_CHARS = 2000
# Fewer letters than this and a guess is a coin toss ("ok", "Danke!", "C-001042").
MIN_LETTERS = 10
# The model's normalised probability the best language must reach: more likely than all
# the others together. Below it ("hola" alone, a line of product names) we do not guess.
MIN_PROBABILITY = 0.5

_URLS = re.compile(r"\S+://\S+|\S+@\S+|#?\b[A-Z]{1,3}-?\d{3,}\b")
_QUOTED = re.compile(r"^\s*>.*$", re.M)


@lru_cache(maxsize=1)
def identifier() -> Any:
    """The model, loaded once per process (about 1.5 s): the parse pool's forkserver loads it
    before it forks any child (normalizer/language_model.py)."""
    from py3langid.langid import MODEL_DIR, MODEL_FILE, LanguageIdentifier

    # Not narrowed to our languages (set_languages): an Italian message must come out as
    # Italian, and so fall back, not as the Spanish it resembles most among ours.
    return LanguageIdentifier.from_modelpath(MODEL_DIR / MODEL_FILE, norm_probs=True)


def cleaned(text: str) -> str:
    """The person's own words: quoted lines, links, addresses and order or case numbers
    out, which are the same in every language and would only add noise."""
    text = _QUOTED.sub(" ", text[: MAX_CHARS * 2])
    return " ".join(_URLS.sub(" ", text).split())[:MAX_CHARS]


def letters(text: str) -> int:
    return sum(1 for ch in text if ch.isalpha())


def decide(best: str, probability: float, text: str) -> str | None:
    """Whether the model's best guess is good enough to act on (a pure rule)."""
    if letters(text) < MIN_LETTERS or probability < MIN_PROBABILITY:
        return None
    return best if best in LANGUAGES else None


def detect(text: str) -> str | None:
    """The language of `text` (one of inbox.i18n.LANGUAGES), or None when unsure."""
    words = cleaned(text)
    if letters(words) < MIN_LETTERS:
        return None
    best, probability = identifier().classify(words)
    return decide(str(best), float(probability), words)

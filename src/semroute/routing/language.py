"""Whether a query is probably not English, for an encoder trained on English only.

The default encoder (all-MiniLM-L6-v2) was trained on English: a French or Spanish query gets an
embedding, but its similarities to English examples are low and mean little, so it goes to the
default model with no sign why. :func:`language_warning` says so.

The heuristic, chosen to be cheap on the ``route()`` path (a regex and set look-ups, a few
microseconds) and to leave English with typos alone:

- **script**: more than half of the query's letters are outside the Latin script (Cyrillic,
  Greek, Arabic, Hebrew, CJK, Devanagari, ...);
- **function words**: the query has at least :data:`MIN_FOREIGN_WORDS` words from a short list
  of common function words of French, Spanish, Portuguese, Italian, German and Dutch, and more
  of them than of English function words.

Vocabulary-based tests (the share of words WordPiece splits into many pieces) do not work here:
the tokenizer's vocabulary holds many French and Spanish words, and English typos split as much
as foreign words do. Function words are what every sentence has and what typos rarely touch.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["MIN_FOREIGN_WORDS", "english_only", "language_warning"]

MIN_FOREIGN_WORDS = 2
"""Foreign function words a query needs before it is judged (one could be a name or a loan)."""

_WORD = re.compile(r"[^\W\d_]+")


def _words(*groups: str) -> frozenset[str]:
    return frozenset(word for group in groups for word in group.split())


_ENGLISH = _words(
    """the a an is are was were be been to of and or in on at by for with from into about as my
    your our their his her its me you we they he she it i this that these those what how why when
    where who which can could do does did will would should shall may might must not no have has
    had there here some any all please just than then so if but up out get make want need tell
    give help show write explain find"""
)

_FOREIGN = _words(
    # French
    """de en le la les des du est une et pour pas que qui dans sur avec mon ma mes je tu il nous vous
    ce cet cette sont au aux ne comment pourquoi quel quelle quoi où moi toi faire peux puis très
    être avoir plaît bonjour merci voudrais veux""",
    # Spanish
    """el los las es una por para con mi mis yo qué cómo cuál cuándo dónde porque está están
    del al lo se su sus pero muy hay quiero puedo necesito favor hola gracias este esta esto y
    también""",
    # Portuguese
    """não uma meu minha você são onde da dos das também obrigado olá""",
    # Italian
    """il gli della di che è sono mio mia perché questo questa ciao grazie""",
    # German
    """der das und ist nicht ich wie warum mein meine ein eine mit für auf zu den dem bitte
    kann danke""",
    # Dutch
    """het een ik niet wat hoe waarom mijn voor""",
)


def english_only(encoder_name: str) -> bool:
    """Whether an encoder of this name (a hub name or a folder) was trained on English only:
    sentence-transformers' ``all-*`` models and the English BGE, E5 and GTE checkpoints, never
    one whose name says ``multilingual``. Other encoders get no warning."""
    name = encoder_name.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1].lower()
    if "multilingual" in name or name.startswith(("multi-", "labse", "bge-m3")):
        return False
    if name.startswith(("all-minilm", "all-mpnet", "all-distilroberta", "e5-", "gte-")):
        return True
    return name.startswith("bge-") and "-en" in name


def language_warning(text: str) -> str | None:
    """A one-line warning when ``text`` is probably not English (see the module docstring),
    else None."""
    if not text.isascii():
        letters = [c for c in text if c.isalpha()]
        if letters:
            foreign_script = sum(1 for c in letters if not _latin(c))
            if foreign_script * 2 > len(letters):
                return (
                    "most of this query is not in the Latin script, and the encoder is "
                    "English-only: its confidences mean little here"
                )
    words = _WORD.findall(text.lower())
    foreign = sum(1 for w in words if w in _FOREIGN)
    if foreign < MIN_FOREIGN_WORDS:
        return None
    english = sum(1 for w in words if w in _ENGLISH)
    if foreign <= english:
        return None
    return (
        "this query looks like it is not English, and the encoder is English-only: its "
        "confidences mean little here (use a multilingual encoder, or route by rules)"
    )


def _latin(char: str) -> bool:
    if char < "\u0250":  # Basic Latin to Latin Extended-B
        return True
    return unicodedata.name(char, "").startswith("LATIN")

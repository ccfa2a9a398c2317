"""French wording shared by what people read: counts with their agreement. (The texts
themselves are Jinja2 templates in ``include/templates/``, rendered by ``flows/templating.py``;
``flows/plain_text.py`` hands ``plural`` to the plain-text ones.)

French puts 0 and 1 in the singular ("0 anomalie", "1 anomalie", "2 anomalies").
"""

from __future__ import annotations


def plural(count: int, singular: str, plural_form: str | None = None) -> str:
    """``count`` followed by the noun in the right number: ``plural(1, "jour")`` -> "1 jour"."""
    noun = singular if abs(count) < 2 else (plural_form or _plural_of(singular))
    return f"{count} {noun}"


def _plural_of(words: str) -> str:
    """The plural of a noun and its adjectives ("établissement", "passage rejeté",
    "épisode clos" stays "épisodes clos"); every word ending in s, x or z is left as it is."""
    out = []
    for i, word in enumerate(words.split(" ")):
        if i and word in {"de", "du", "des", "sans", "avec", "par", "en", "à"}:
            out.extend(words.split(" ")[i:])  # "passage sans fichier": only the head agrees
            break
        out.append(word if word.endswith(("s", "x", "z")) else word + "s")
    return " ".join(out)

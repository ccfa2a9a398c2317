"""French wording shared by what people read: counts with their agreement, and the Jinja2
templates of ``include/templates/`` (e-mails, run notes).

French puts 0 and 1 in the singular ("0 anomalie", "1 anomalie", "2 anomalies").
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

TEMPLATES_DIR = Path(os.environ.get("RPU_TEMPLATES_DIR",
                                    Path(__file__).resolve().parents[3] / "include" / "templates"))


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


@lru_cache(maxsize=1)
def _environment():
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)), autoescape=False,
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                             trim_blocks=True, lstrip_blocks=True)
    env.filters["fr"] = lambda day: day.strftime("%d/%m/%Y") if day else "?"
    env.filters["plural"] = plural
    return env


def render(name: str, **context) -> str:
    """The text of ``include/templates/<name>`` filled with ``context``."""
    return _environment().get_template(name).render(**context)

"""Plain text people read (reports beside files, e-mails), rendered from the templates of
``include/templates/`` with a few helpers that keep a value from outside in its place.

A file name, a value read in a file or an establishment's name may hold a newline: written as
it is, it would start a line of its own in a report ("Verdict : ACCEPTÉ" forged by a file
name) or break an e-mail's subject. The templates pass every such value through
``one_line`` (a sentence: each breaking or invisible character escaped, the rest untouched)
or ``shown`` (a name: quoted and escaped whole when it holds anything but printable
characters, so the reader sees that it is odd).
"""

from __future__ import annotations

import re
import unicodedata

from rpu.flows.days import WEEKDAYS, days_fr, fr
from rpu.flows.templating import render as _render
from rpu.formats.wording import plural

# Control characters (newlines among them), line and paragraph separators, format characters
# (bidirectional overrides that would show a name backwards), surrogates, unassigned code points.
_HIDDEN = ("Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn")


def _hidden(char: str) -> bool:
    return unicodedata.category(char) in _HIDDEN


def one_line(value) -> str:
    """``value`` as text on one line: every hidden character written as its escape
    (``a\\nb``); a non-breaking space, an accent or « » stay as they are."""
    text = "" if value is None else str(value)
    if not any(_hidden(char) for char in text):
        return text
    return "".join(repr(char)[1:-1] if _hidden(char) else char for char in text)


def shown(name) -> str:
    """A name that came from outside, as it may be written in a log or an e-mail: quoted and
    escaped when it holds anything but printable characters (a newline would forge a line)."""
    name = "" if name is None else str(name)
    return name if name.isprintable() else repr(name)


# Functions the templates call (the filters of ``templating`` stay at hand too): ``fr`` writes an
# unknown date « ? », where the ``fr_date`` filter writes « — ».
HELPERS = {"one_line": one_line, "shown": shown, "plural": plural, "fr": fr, "days_fr": days_fr, "weekdays": WEEKDAYS}


def render(template: str, /, **context) -> str:
    """The text of ``include/templates/<template>`` with the helpers above at hand."""
    return _render(template, **HELPERS, **context)


def subject(template: str, /, **context) -> str:
    """An e-mail subject: one line whatever the template's layout (a template wrapped on two
    lines, or ending with a newline, still gives one line)."""
    return re.sub(r"\s*[\r\n]+\s*", " ", render(template, **context).strip())

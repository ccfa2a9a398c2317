"""What people read is written as Jinja2 templates in ``include/templates/`` (an ORU can read
and adjust them): HTML with autoescape on, plain text for e-mails. French number and date
formats are filters here, so templates never format numbers by hand.

An ORU overrides a template by dropping a file of the same name in ``templates/`` beside its
region file (``RPU_REGION_CONFIG``): that folder is searched first, then ``include/templates/``
(an override may still ``{% include %}`` the shipped templates it does not replace)."""

from __future__ import annotations

import os
from datetime import date, datetime
from functools import cache
from pathlib import Path

import jinja2

from rpu.flows.days import WEEKDAYS

TEMPLATE_DIR = Path(os.environ.get("RPU_TEMPLATE_DIR", Path(__file__).resolve().parents[3] / "include" / "templates"))


def fr_int(value) -> str:
    return "—" if value is None else f"{int(value):,}".replace(",", "\u202f")


def fr_pct(share, digits: int = 1) -> str:
    return "—" if share is None else f"{share * 100:.{digits}f}".replace(".", ",") + "\u00a0%"


def fr_date(day) -> str:
    return "—" if day is None else f"{day:%d/%m/%Y}"


def fr_datetime(moment: datetime | None) -> str:
    return "—" if moment is None else f"{moment:%d/%m/%Y à %H:%M}"


def fr_hours(hours) -> str:
    """12,5 h → « 12 h 30 »; None → « — »."""
    if hours is None:
        return "—"
    minutes = round(float(hours) * 60)
    return f"{minutes // 60}\u00a0h\u00a0{minutes % 60:02d}"


def weekday_fr(day: date) -> str:
    return WEEKDAYS[day.weekday()]


def _autoescape(name: str | None) -> bool:
    return bool(name) and name.endswith((".html.j2", ".html"))


def region_templates_dir(region_path: str | os.PathLike | None = None) -> Path | None:
    """``templates/`` beside the region file (the one given, else ``RPU_REGION_CONFIG``), if the
    ORU made one."""
    path = region_path or os.environ.get("RPU_REGION_CONFIG")
    if not path:
        return None
    folder = Path(path).resolve().parent / "templates"
    return folder if folder.is_dir() else None


@cache
def environment(overrides: Path | None = None) -> jinja2.Environment:
    """The templates, ``overrides`` (the region's folder) first; one environment per folder."""
    shipped = jinja2.FileSystemLoader(str(TEMPLATE_DIR))
    env = jinja2.Environment(
        loader=jinja2.ChoiceLoader([jinja2.FileSystemLoader(str(overrides)), shipped]) if overrides else shipped,
        autoescape=_autoescape,
        undefined=jinja2.StrictUndefined,  # a missing value is an error, never an empty cell
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(fr_int=fr_int, fr_pct=fr_pct, fr_date=fr_date, fr_datetime=fr_datetime, fr_hours=fr_hours,
                       weekday_fr=weekday_fr)
    return env


def render(template: str, /, **context) -> str:
    """The template rendered, the region's own version first when it has one."""
    return environment(region_templates_dir()).get_template(template).render(**context)


def render_for(region_path: str | os.PathLike | None, template: str, /, **context) -> str:
    """As :func:`render`, for a region file named explicitly (``rpu ... --region``)."""
    return environment(region_templates_dir(region_path)).get_template(template).render(**context)

"""The French guide (docs/fr/) builds with MkDocs Material into a site that opens offline, and
the README and `make run` say where to read it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PAGES = ("index", "etablissement-adhesion", "etablissement-envoi", "etablissement-rapports", "ars", "region",
         "courriels")


def test_the_guide_builds_strictly_into_a_site_that_needs_no_network(tmp_path):
    site = tmp_path / "site"
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
                            cwd=REPO, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert result.returncode == 0, result.stderr
    for page in PAGES:
        text = (site / f"{page}.html").read_text(encoding="utf-8")
        assert '<html lang="fr"' in text, page
        # Nothing fetched when the page is opened: no remote stylesheet, script, font or image.
        assert not re.search(r"""<(?:link|script|img)[^>]+(?:href|src)=["']?(?:https?:)?//""", text), page
    adhesion = (site / "etablissement-adhesion.html").read_text(encoding="utf-8")
    for words in ("FINESS géographique", "clé SSH publique", "Sept jours corrects consécutifs", "rapports/"):
        assert words in adhesion
    assert "rpu_invs_replay" in (site / "ars.html").read_text(encoding="utf-8")
    assert "Reprise nécessaire" in (site / "courriels.html").read_text(encoding="utf-8")


def test_readme_and_make_run_point_to_the_guide():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "docs/fr/" in readme and "make docs" in readme
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    run = makefile[makefile.index("\nrun:"):makefile.index("\nstop:")]
    assert "docs" in run.splitlines()[1] and "site/index.html" in run

"""Extract benchmark: the cumulative SYRIUS file of a whole year (December's ATIH file), built
from the regional database, against the naive baseline measured in the same run.

    .venv/bin/python benchmarks/extract.py                    # 1,000,000 visits
    .venv/bin/python benchmarks/extract.py --visits 100000    # quicker

Setup (not measured): a fresh database on RPU_BENCH_DATABASE_URL (an administrator URL;
default the local PostgreSQL, postgresql://postgres@127.0.0.1:5432/postgres), one
establishment's year 2026 generated as twelve monthly files and loaded with the loader.

Measured, each in its own process so that its peak memory (ru_maxrss) is its own:

- ours: ``rpu.flows.atih.build_syrius``, what ``rpu_atih_monthly`` runs: a named (server-side)
  cursor read 10,000 rows at a time, visits streamed through the SYRIUS writer into the zip;
- baseline: ``pandas.read_sql`` of the year, then the SYRIUS XML written from the DataFrame
  row by row with lxml (one element tree per PATIENT, ``etree.xmlfile``) into the same zip.

Both write the same file (same elements, CODEGEO table, ages, zip level); the PATIENT counts
are checked equal. Targets: >= 100,000 visits/s, >= 5x the baseline, peak < 300 MB. The
machine's load is printed: on a shared machine, wall-clock rates move with it; the CPU time
per visit of the measured process (zip thread included) moves much less.
"""

from __future__ import annotations

import argparse
import calendar
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "plugins"))

from rpu.sandbox.generator import demo_establishments, write_oscour_file  # noqa: E402
from rpu.sandbox.local_services import create_database, drop_database  # noqa: E402

ADMIN_URL = (os.environ.get("RPU_BENCH_DATABASE_URL") or os.environ.get("RPU_BENCH_ADMIN_URL")
             or "postgresql://postgres@127.0.0.1:5432/postgres")
YEAR = 2026
WHEN = "2027-01-10T06:00:00"

# The measured steps, run as `python benchmarks/extract.py --step NAME URL FINESS CODEGEO OUT`:
# the imports first (not measured), then the step.
IMPORTS = {
    "ours": """
import psycopg
from rpu.flows.atih import build_syrius
from rpu.formats.syrius import CodegeoTable
""",
    "baseline": """
import zipfile
import pandas, sqlalchemy
from lxml import etree
from rpu.formats.syrius import CodegeoTable, age_at, syrius_entry_name
""",
}
STEPS = {
    "ours": """
with psycopg.connect(url, autocommit=True) as conn:
    _, visits, _ = build_syrius(conn, finess, 0, year, 12, CodegeoTable.load(codegeo), out, when=when)
result = {"visits": visits}
""",
    "baseline": """
engine = sqlalchemy.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
frame = pandas.read_sql(
    sqlalchemy.text("SELECT * FROM rpu WHERE finess = :finess AND ordre = 0 AND entree >= :start"
                    " AND entree < :end ORDER BY entree"),
    engine, params={"finess": finess, "start": f"{year}-01-01", "end": f"{year + 1}-01-01"})
table = CodegeoTable.load(codegeo)

def text(value):
    return "" if value is None or value != value else str(value)  # None and NaN/NaT

def integer(value):
    value = text(value)
    return value if value.isdigit() else "0"

count = 0
with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zipped, \\
        zipped.open(syrius_entry_name(finess, 0, when), "w", force_zip64=True) as entry, \\
        etree.xmlfile(entry, encoding="utf-8") as xml:
    xml.write_declaration()
    with xml.element("SYRIUS"):
        header = etree.Element("ETABLISSEMENT")
        for tag, value in (("FINESS", finess), ("ORDRE", "0"), ("EXTRACT", when.strftime("%d/%m/%Y %H:%M:%S")),
                           ("DATEDEBUT", f"01/01/{year}"), ("DATEFIN", f"31/12/{year}")):
            etree.SubElement(header, tag).text = value
        xml.write(header)
        with xml.element("PASSAGES"):
            for row in frame.itertuples(index=False):
                patient = etree.Element("PATIENT")
                entree = row.entree.to_pydatetime()
                naissance = row.naissance if isinstance(row.naissance, date) else None
                age, days = age_at(naissance, entree)
                etree.SubElement(patient, "CODEGEO").text = table.codegeo(row.cp if isinstance(row.cp, str) else None)
                etree.SubElement(patient, "AGE").text = str(age)
                etree.SubElement(patient, "AGE_JOURS").text = str(days)
                if text(row.sexe):
                    etree.SubElement(patient, "SEXE").text = row.sexe
                etree.SubElement(patient, "ENTREE").text = entree.strftime("%d/%m/%Y %H:%M")
                etree.SubElement(patient, "MODE_ENTREE").text = integer(row.mode_entree)
                etree.SubElement(patient, "PROVENANCE").text = integer(row.provenance)
                for tag, value in (("TRANSPORT", row.transport), ("TRANSPORT_PEC", row.transport_pec),
                                   ("MOTIF", row.motif), ("GRAVITE", row.gravite), ("DP", row.dp)):
                    if text(value):
                        etree.SubElement(patient, tag).text = value
                das = etree.SubElement(patient, "LISTE_DA")
                for code in row.da:
                    etree.SubElement(das, "DA").text = code
                actes = etree.SubElement(patient, "LISTE_ACTES")
                for code in row.actes:
                    etree.SubElement(actes, "ACTE").text = code
                sortie = row.sortie
                if text(sortie) and sortie is not pandas.NaT:
                    etree.SubElement(patient, "SORTIE").text = sortie.strftime("%d/%m/%Y %H:%M")
                etree.SubElement(patient, "MODE_SORTIE").text = integer(row.mode_sortie)
                etree.SubElement(patient, "DESTINATION").text = integer(row.destination)
                if text(row.orient):
                    etree.SubElement(patient, "ORIENT").text = row.orient
                xml.write(patient)
                count += 1
result = {"visits": count}
""",
}


def run_step(step: str, url: str, finess: str, codegeo: Path, out: Path) -> dict:
    """Run one step in a fresh interpreter; return its visits, seconds, CPU seconds, peak RSS."""
    completed = subprocess.run([sys.executable, __file__, "--step", step, url, finess, str(codegeo), str(out)],
                               capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        raise SystemExit(f"{step} failed:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def _child(step: str, url: str, finess: str, codegeo: str, out: str) -> None:
    import resource
    from datetime import datetime

    namespace = {"url": url, "finess": finess, "codegeo": codegeo, "out": out, "year": YEAR, "date": date,
                 "when": datetime.fromisoformat(WHEN)}
    exec(IMPORTS[step], namespace)  # the fixed snippets above, never input
    started, cpu = time.perf_counter(), time.process_time()
    exec(STEPS[step], namespace)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    result = namespace["result"]
    result.update(seconds=seconds, cpu_seconds=cpu, peak_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  zip_mb=Path(out).stat().st_size / 1e6)
    print(json.dumps(result))


def _load(url: str, finess: str, visits: int, workdir: Path) -> int:
    """One establishment's year, as twelve monthly files through the loader."""
    import psycopg

    from rpu.store.db import migrate
    from rpu.store.loader import load_file

    per_day = visits / (366 if calendar.isleap(YEAR) else 365)
    loaded = 0
    with psycopg.connect(url, autocommit=True) as conn:
        migrate(conn)
        for month in range(1, 13):
            path = workdir / f"month{month:02d}.xml"
            write_oscour_file(path, finess, 0, date(YEAR, month, 1), date(YEAR, month, calendar.monthrange(YEAR, month)[1]),
                              visits_per_day=per_day, seed=month)
            result = load_file(conn, path)
            if result.status != "loaded":
                raise SystemExit(f"{path.name}: {result.status} {result.reason}")
            loaded += result.loaded_records
            path.unlink()
        conn.execute("VACUUM ANALYZE rpu")
        cps = [row[0] for row in conn.execute("SELECT DISTINCT cp FROM rpu WHERE cp IS NOT NULL")]
    # A CODEGEO table for the residences drawn (most CP found, the rest falls back).
    (workdir / "codegeo.csv").write_text("cp;codegeo\n" + "".join(f"{cp};{cp}\n" for cp in cps[::2]), encoding="utf-8")
    return loaded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--visits", type=int, default=1_000_000, help="visits in the year (default 1,000,000)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of ours (the best is kept; default 3)")
    parser.add_argument("--no-baseline", action="store_true", help="measure ours only")
    args = parser.parse_args()

    finess = demo_establishments(1)[0]["finess"]
    with tempfile.TemporaryDirectory(prefix="rpu-bench-extract-") as workdir:
        workdir = Path(workdir)
        name = f"rpu_bench_{uuid.uuid4().hex[:8]}"
        url = create_database(ADMIN_URL, name)
        try:
            print(f"Generating and loading {args.visits:,} visits (12 monthly files) ...", flush=True)
            started = time.perf_counter()
            loaded = _load(url, finess, args.visits, workdir)
            print(f"  {loaded:,} visits loaded in {time.perf_counter() - started:.0f} s", flush=True)
            codegeo = workdir / "codegeo.csv"
            ours = []
            for i in range(args.repeat):
                ours.append(run_step("ours", url, finess, codegeo, workdir / "ours.zip"))
                print(f"  ours, run {i + 1}: {ours[-1]['visits'] / ours[-1]['seconds']:,.0f} visits/s", flush=True)
            best = min(ours, key=lambda r: r["seconds"])
            rows = [(f"ours: named cursor + streamed writer (best of {args.repeat})", best)]
            if not args.no_baseline:
                print("  baseline (pandas.read_sql + lxml) ...", flush=True)
                baseline = run_step("baseline", url, finess, codegeo, workdir / "baseline.zip")
                if baseline["visits"] != best["visits"]:
                    raise SystemExit(f"PATIENT counts differ: ours {best['visits']}, baseline {baseline['visits']}")
                rows.append(("naive: pandas.read_sql + lxml row by row", baseline))
        finally:
            drop_database(ADMIN_URL, name)

    load1, _, _ = os.getloadavg()
    print(f"\nSYRIUS extract 01/01/{YEAR} -> 31/12/{YEAR}, one establishment, {loaded:,} visits;"
          f" {os.cpu_count()} CPU, load average {load1:.1f}\n")
    print(f"{'':<58}{'visits/s':>10}{'seconds':>9}{'CPU us/visit':>14}{'peak MB':>9}{'zip MB':>8}")
    for label, result in rows:
        rate = result["visits"] / result["seconds"]
        print(f"{label:<58}{rate:>10,.0f}{result['seconds']:>9.1f}{result['cpu_seconds'] / result['visits'] * 1e6:>14.1f}"
              f"{result['peak_mb']:>9.0f}{result['zip_mb']:>8.1f}")
    rate = best["visits"] / best["seconds"]
    verdict = [f"{rate:,.0f} visits/s {'>=' if rate >= 100_000 else '<'} 100,000",
               f"peak {best['peak_mb']:.0f} MB {'<' if best['peak_mb'] < 300 else '>='} 300"]
    if len(rows) > 1:
        ratio = rate / (rows[1][1]["visits"] / rows[1][1]["seconds"])
        verdict.insert(1, f"{ratio:.1f}x the baseline {'>=' if ratio >= 5 else '<'} 5x")
    print("\ntargets: " + "; ".join(verdict))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--step":
        _child(*sys.argv[2:7])
    else:
        main()

"""Ingest benchmark: validate-only and full load of one large generated OSCOUR file, against the
parse floor (a bare lxml iterparse of the same file that keeps nothing) and the naive baseline
(pandas.read_xml + DataFrame.to_sql), all measured in the same run: only same-run ratios compare.

    .venv/bin/python benchmarks/ingest.py                      # 1,000,000 visits
    .venv/bin/python benchmarks/ingest.py --visits 200000      # quicker

Each measured step runs in its own process, so its peak memory (ru_maxrss) is its own. Read,
validate and load run ``--repeat`` rounds, each step right after a floor of its own: the ratios
quoted are the medians of those pairs (this machine's speed was seen to drift by 1.6x for tens of
seconds, which a floor measured once per round, or the best of each step, let through); the best
of each step is printed too. Each load goes to a fresh database created
on RPU_BENCH_ADMIN_URL (default: the local PostgreSQL) and dropped after it. Targets (issue #2): full load >= 50,000 visits/s and >= 10x the baseline,
peak memory < 300 MB whatever the file size.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from datetime import date, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "plugins"))

from rpu.sandbox.generator import demo_establishments, write_oscour_file  # noqa: E402
from rpu.sandbox.local_services import create_database, drop_database  # noqa: E402

ADMIN_URL = os.environ.get("RPU_BENCH_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")

# The measured steps, each run as `python benchmarks/ingest.py --step NAME FILE [URL]`: what
# a step imports is imported before its clock starts (the interpreter and its libraries loading,
# ~0.2 s for psycopg and the loader, are not a cost of the file); the rest is timed.
PAIRED = ("read", "validate", "load")  # each timed right after a floor
STEPS = {
    "floor": ("from lxml import etree", """
visits = 0
for _event, element in etree.iterparse(path, events=("end",), tag="PATIENT"):
    visits += 1
    element.clear()
    while element.getprevious() is not None:
        del element.getparent()[0]
result = {"visits": visits, "status": "parsed"}
"""),
    # The reader alone (each PATIENT's values as text, no check): where validate's time goes.
    "read": ("from rpu.formats.oscour import OscourReader", """
visits = sum(1 for _record in OscourReader(path))
result = {"visits": visits, "status": "parsed"}
"""),
    # What `rpu validate` runs.
    "validate": ("from rpu.store.copy_in import validate_file", """
report = validate_file(path)
result = {"visits": report.kept_records, "status": report.status}
"""),
    "load": ("import psycopg\nfrom rpu.store.loader import load_file", """
with psycopg.connect(url) as conn:
    outcome = load_file(conn, path)
    conn.commit()
result = {"visits": outcome.loaded_records, "status": outcome.status, "parts": outcome.seconds}
"""),
    "baseline": ("import pandas, sqlalchemy", """
frame = pandas.read_xml(path, xpath="//PATIENT", parser="lxml")
engine = sqlalchemy.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
frame.to_sql("rpu_naive", engine, if_exists="replace", index=False)
result = {"visits": len(frame), "status": "loaded"}
"""),
}


def run_step(step: str, path: Path, url: str = "") -> dict:
    """Run one step in a fresh interpreter; return its visits, seconds and peak RSS."""
    completed = subprocess.run([sys.executable, __file__, "--step", step, str(path), url],
                               capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        raise SystemExit(f"{step} failed:\n{completed.stderr[-2000:]}")
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    if result["status"] not in ("parsed", "accepted", "loaded"):
        raise SystemExit(f"{step}: the file was {result['status']}, the figures would mean nothing")
    return result


def _child(step: str, path: str, url: str) -> None:
    import resource

    namespace = {"path": path, "url": url}
    setup, timed = STEPS[step]
    exec(setup, namespace)  # the fixed snippets above, never input
    started = time.perf_counter()
    exec(timed, namespace)
    seconds = time.perf_counter() - started
    result = namespace["result"]
    result.update(seconds=seconds, peak_mb=_peak_mb(resource))
    print(json.dumps(result))


def _peak_mb(resource) -> float:
    """This process's peak resident memory. Linux carries ru_maxrss over an exec (a child shows
    at least its parent's peak): VmHWM, the peak of this process's own memory, is read first."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--visits", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5,
                        help="rounds of (floor, read), (floor, validate), (floor, load): the median ratio counts")
    parser.add_argument("--baseline-visits", type=int, default=50_000,
                        help="the naive baseline runs on a slice this size (it is far too slow on the whole)")
    args = parser.parse_args()

    # Two establishments: loading the slice must not replace the large file's visits.
    finess, slice_finess = (e["finess"] for e in demo_establishments(2))
    # A period that has ended: an EXTRACT later than the load's reception time is refused.
    end = date.today() - timedelta(days=2)
    with tempfile.TemporaryDirectory(prefix="rpu-bench-") as workdir:
        workdir = Path(workdir)
        big, small = workdir / "big.xml", workdir / "slice.xml"
        days = 365
        print(f"Generating {args.visits:,} visits ...", flush=True)
        written = write_oscour_file(big, finess, 0, end - timedelta(days=days - 1), end,
                                    visits_per_day=args.visits / days, seed=1)
        write_oscour_file(small, slice_finess, 0, end - timedelta(days=days - 1), end,
                          visits_per_day=args.baseline_visits / days, seed=2)
        size_mb = big.stat().st_size / 1e6
        rounds = []
        for _ in range(args.repeat):
            # One round: each step right after a floor, the load into a fresh database (the same
            # file twice would be a duplicate).
            with _fresh_database() as url:
                rounds.append({step: (run_step("floor", big), run_step(step, big, url if step == "load" else ""))
                               for step in PAIRED})
        with _fresh_database() as url:
            slice_load, baseline = run_step("load", small, url), run_step("baseline", small, url)

    def best(step: str) -> dict:
        if step == "floor":
            return min((r[paired][0] for r in rounds for paired in PAIRED), key=lambda result: result["seconds"])
        return min((r[step][1] for r in rounds), key=lambda result: result["seconds"])

    def ratios(step: str) -> list[float]:
        return [r[step][1]["seconds"] / r[step][0]["seconds"] for r in rounds]

    rows = [
        ("parse floor: bare lxml iterparse", best("floor")),
        ("read only (ours, no check)", best("read")),
        ("validate only (ours)", best("validate")),
        ("full load (ours)", best("load")),
        ("full load (ours), baseline slice", slice_load),
        ("naive baseline: read_xml + to_sql, slice", baseline),
    ]
    print(f"\nFile: {written:,} visits, {size_mb:,.0f} MB; baseline slice: {baseline['visits']:,} visits;"
          f" best of {args.repeat} round{'s' if args.repeat > 1 else ''}\n")
    print(f"{'step':<44}{'visits':>11}{'seconds':>10}{'visits/s':>11}{'peak MB':>10}")
    for label, result in rows:
        rate = result["visits"] / result["seconds"]
        print(f"{label:<44}{result['visits']:>11,}{result['seconds']:>10.1f}{rate:>11,.0f}{result['peak_mb']:>10.0f}")
    print("\n/ parse floor, each step against the floor run just before it"
          f" (median of {args.repeat}; each pair; best of each step):")
    floor = rows[0][1]["seconds"]
    for step, (_label, result) in zip(PAIRED, rows[1:4], strict=True):
        pairs = ratios(step)
        print(f"  {step:<9}{statistics.median(pairs):>6.2f}x   ({', '.join(f'{r:.2f}' for r in pairs)};"
              f" best {result['seconds'] / floor:.2f}x)")
    parts = rows[3][1]["parts"]
    print(f"  the best load, of which: reading, checking and copying the visits {parts['read']:.2f} s,"
          f" the days {parts['days']:.2f} s, the timeliness record {parts['timeliness']:.2f} s"
          f" ({parts['timeliness'] / floor:.2f}x the floor)")
    ours = rows[3][1]["visits"] / rows[3][1]["seconds"]
    naive = baseline["visits"] / baseline["seconds"]
    print(f"full load vs naive baseline: {ours / naive:.1f}x faster  (peak memory target: < 300 MB)")


@contextmanager
def _fresh_database():
    """A new migrated database on ADMIN_URL, dropped on the way out."""
    import psycopg

    from rpu.store.db import migrate

    name = f"rpu_bench_{uuid.uuid4().hex[:8]}"
    url = create_database(ADMIN_URL, name)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            migrate(conn)
        yield url
    finally:
        drop_database(ADMIN_URL, name)

if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--step":
        _child(sys.argv[2], sys.argv[3], sys.argv[4] if len(sys.argv) > 4 else "")
    else:
        main()

"""A night of a large region: N establishments, one 7-day file each, taken by 1, 2... loaders.

    .venv/bin/python benchmarks/ingest_night.py                       # 100 establishments x ~500 visits/day, 1 loader
    .venv/bin/python benchmarks/ingest_night.py --workers 1,2         # the same night with 1 then 2 loaders: speedup
    .venv/bin/python benchmarks/ingest_night.py --workers 1,2 --repeat 3   # 3 rounds, order alternated: median speedup
    .venv/bin/python benchmarks/ingest_night.py --france              # 700 establishments x 7 days (~420,000 visits), 2 loaders
    .venv/bin/python benchmarks/ingest_night.py --second-night --workers 1,2   # the night after: 6 days replaced each
    .venv/bin/python benchmarks/ingest_night.py --establishments 20 --workers 1,2
    .venv/bin/python benchmarks/ingest_night.py --archived-nights 365 # a night after a year of archives in traites/
    .venv/bin/python benchmarks/ingest_night.py --airflow --workers 1,2   # through Airflow itself, pool of 1 then 2 slots

What rpu_ingest does with one ``load`` instance per establishment and the pool ``rpu_db`` (or
Celery workers) letting W of them run at once: one listing (``list_inbox``), then W loader
processes, each taking the next establishment and running ``load_establishment`` (the same
code as the ``load`` task) over an SFTP session and a database connection of its own, as each
task instance opens them. The loaders are fresh interpreters (spawned, as a task process is), so
their peak memory is their own. Airflow's own cost per task (a task process starting, parsing
the DAG, reporting its state) is left out here; ``--airflow`` measures the night with it,
through a real scheduler and the pool (airflow_night.py).

The SFTP server is OpenSSH's sshd with internal-sftp, as on the region's server
(deploy/sftp), when /usr/sbin/sshd is here (``apt-get install openssh-server``), else the Python
server of the tests (``--sftp-server python``: asyncssh, which costs several times OpenSSH's
CPU on the same machine as the loaders); a fresh database on the local PostgreSQL
(RPU_BENCH_ADMIN_URL) for each run; every run takes the very same files (generated once).
Figures are only comparable within one run of this script (same machine, same moment).
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from datetime import date, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "plugins"))

import paramiko  # noqa: E402
import psycopg  # noqa: E402
from lxml import etree  # noqa: E402

from rpu.config import region as region_config  # noqa: E402
from rpu.flows.ingest import InboxFile, IngestSummary, SftpInbox, list_inbox, load_establishment  # noqa: E402
from rpu.sandbox.generator import demo_establishments, write_oscour_file  # noqa: E402
from rpu.sandbox.local_services import SftpServer, create_database, drop_database  # noqa: E402
from rpu.sandbox.openssh_server import OpenSshSftpServer, openssh_available  # noqa: E402
from rpu.store.db import migrate  # noqa: E402

ADMIN_URL = os.environ.get("RPU_BENCH_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
END = date(2026, 11, 26)
SFTP_USER, SFTP_PASSWORD = "rpu", "banc-essai"
FRANCE_ESTABLISHMENTS = 700
FRANCE_VISITS_PER_YEAR = 22_000_000
SESSION_NAMES = {"task": "one per establishment (as each load task)", "loader": "one per loader"}
SERVER_NAMES = {"openssh": "OpenSSH sshd, internal-sftp (as deployed)", "python": "Python (asyncssh, the tests')"}


def bench_region(establishments: list[dict]) -> region_config.Region:
    return region_config.parse({
        "region": {"code": "BENCH", "name": "Banc d'essai", "operator_emails": ["oru@localhost"]},
        "establishment": [{"finess": e["finess"], "ordre": 0, "name": e["name"], "status": "live"}
                          for e in establishments],
    })


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat: the loaders,
    PostgreSQL and the SFTP server all count (and anything else running)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    ticks = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields) - idle) / ticks, sum(fields) / ticks


def process_cpu(pid: int, *, children: bool = False) -> float | None:
    """CPU seconds a process of this machine has used (None if it is not here: a PostgreSQL
    elsewhere); with ``children``, those of its descendants too, ended (once waited for) or
    running: an sshd's sessions."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    ticks = int(fields[11]) + int(fields[12]) + (int(fields[13]) + int(fields[14]) if children else 0)
    seconds = ticks / os.sysconf("SC_CLK_TCK")
    if children:
        seconds += sum(process_cpu(child, children=True) or 0.0 for child in _children(pid))
    return seconds


def _children(pid: int) -> list[int]:
    try:
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def sftp_session(address: dict) -> tuple[paramiko.Transport, paramiko.SFTPClient]:
    """``address``: the port and the account, by password (the Python server) or key (sshd)."""
    transport = paramiko.Transport(("127.0.0.1", address["port"]))
    if "key_file" in address:
        transport.connect(username=address["username"],
                          pkey=paramiko.Ed25519Key.from_private_key_file(address["key_file"]))
    else:
        transport.connect(username=SFTP_USER, password=SFTP_PASSWORD)
    return transport, paramiko.SFTPClient.from_transport(transport)


def loader(url: str, address: dict, establishments: list[dict], per_task: bool, todo, ready, results) -> None:
    """One loader process: the next establishment's files until there are none left. With
    ``per_task``, each establishment over an SFTP session and a database connection of its own,
    with the region read again, as each ``load`` task instance does; else over the loader's."""
    summary = IngestSummary()
    backend_cpu: float | None = 0.0  # None once a backend is not on this machine

    def take(conn, sftp, region, folder: str, files: list[dict]) -> None:
        nonlocal backend_cpu
        backend, before = conn.info.backend_pid, process_cpu(conn.info.backend_pid)
        load_establishment(conn, SftpInbox(sftp), region, folder, [InboxFile(**f) for f in files], summary)
        after = process_cpu(backend)
        backend_cpu = None if None in (before, after, backend_cpu) else backend_cpu + after - before

    with _session(url, address) as (conn, sftp):
        region = bench_region(establishments)
        ready.put(os.getpid())
        item = todo.get()
        started, cpu_start = time.perf_counter(), time.process_time()
        while item is not None:  # None: nothing left
            if per_task:
                with _session(url, address) as (own_conn, own_sftp):
                    take(own_conn, own_sftp, bench_region(establishments), *item)
            else:
                take(conn, sftp, region, *item)
            item = todo.get()
        cpu = time.process_time() - cpu_start
    summary.seconds = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    results.put({"summary": summary.as_dict(), "peak_mb": peak_mb, "pid": os.getpid(), "cpu": cpu,
                 "backend_cpu": backend_cpu})


@contextlib.contextmanager
def _session(url: str, address: dict):
    transport, sftp = sftp_session(address)
    try:
        with psycopg.connect(url) as conn:
            yield conn, sftp
    finally:
        transport.close()


def sftp_server(root: Path, ports, stop) -> None:
    """One SFTP server process (asyncssh serves its sessions in one thread)."""
    server = SftpServer(root, username=SFTP_USER, password=SFTP_PASSWORD).start()
    ports.put(server.port)
    stop.wait()
    server.stop()


@contextlib.contextmanager
def sftp_servers(kind: str, root: Path, workers: int, context):
    """The SFTP server(s) the loaders connect to: yields one address per loader and the pids whose
    CPU (with their children's) is the servers'.

    OpenSSH forks a process per session, as on the region's server. The Python server serves
    its sessions in one thread: one process each, so that the loaders' downloads do not queue
    on a single thread, which no real server does."""
    if kind == "openssh":
        server = OpenSshSftpServer(root, root.parent / "sshd").start()
        try:
            address = {"port": server.port, "username": server.username, "key_file": str(server.key_file)}
            yield [address] * workers, [server.pid]
        finally:
            server.stop()
        return
    ports, stop = context.Queue(), context.Event()
    servers = [context.Process(target=sftp_server, args=(root, ports, stop)) for _ in range(workers)]
    for server in servers:
        server.start()
    try:
        yield [{"port": ports.get(timeout=60)} for _ in servers], [server.pid for server in servers]
    finally:
        stop.set()
        for server in servers:
            server.join(timeout=30)


def one_night(template: Path, establishments: list[dict], workers: int, before: Path | None = None,
              archived_nights: int = 0, server_kind: str = "openssh", per_task: bool = True) -> dict:
    """Copy the night's files to a fresh SFTP root, migrate a fresh database, list the inbox,
    then load with ``workers`` processes. Returns the wall time and what each loader did.
    ``before``: the files of the night before, loaded first the same way (not measured), so that
    the measured night replaces 6 days of each establishment, as every night in production does.
    A listing before the night sweeps the archive folders for links, as the day's earlier runs
    do (once a day); ``archived_nights``: each establishment's traites/ first holds that many
    nights' files and reports. ``server_kind``: "openssh" or "python" (:func:`sftp_servers`);
    ``per_task``: see :func:`loader`."""
    name = f"rpu_night_{uuid.uuid4().hex[:8]}"
    url = create_database(ADMIN_URL, name)
    context = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="rpu-night-sftp-") as workdir:
        root = Path(workdir) / "sftp"
        root.mkdir()
        try:
            with sftp_servers(server_kind, root, workers, context) as (addresses, server_pids):
                with psycopg.connect(url, autocommit=True) as conn:
                    migrate(conn)
                for night in ([before] if before else []) + [template]:
                    shutil.copytree(night, root, dirs_exist_ok=True)
                    sweep = _archive_and_sweep(root, url, addresses[0], establishments, archived_nights)
                    run = _take_night(context, url, addresses, establishments, workers, server_pids, per_task)
                    run["sweep"] = sweep
        finally:
            drop_database(ADMIN_URL, name)
    return run


def _archive_and_sweep(root: Path, url: str, address: dict, establishments: list[dict], nights: int) -> float:
    """Put ``nights`` nights of archives (a file and its report each) in every establishment's
    traites/, then list the inbox once, as the day's earlier runs did (every 15 minutes): that
    listing sweeps the archive folders for links, which happens once a day, so the night's
    listing is an ordinary one. Returns its seconds."""
    for establishment in establishments:
        traites = root / establishment["finess"] / "traites"
        for night in range(nights):
            traites.mkdir(parents=True, exist_ok=True)
            for suffix in ("", ".rapport.txt"):
                (traites / f"RPU_{establishment['finess']}_{night:04d}.xml{suffix}").touch()
    transport, sftp = sftp_session(address)
    try:
        with psycopg.connect(url) as conn:
            started = time.perf_counter()
            list_inbox(conn, SftpInbox(sftp), bench_region(establishments), IngestSummary())
            return time.perf_counter() - started
    finally:
        transport.close()


def _take_night(context, url: str, addresses: list[dict], establishments: list[dict], workers: int,
                server_pids: list[int], per_task: bool) -> dict:
    """List the inbox, then load with one process per address; checks that every file listed
    was loaded, once."""
    region = bench_region(establishments)
    todo, ready, results = context.Queue(), context.Queue(), context.Queue()
    # The loaders start and connect first (Airflow's per-task start is not measured here).
    processes = [context.Process(target=loader, args=(url, address, establishments, per_task, todo, ready, results))
                 for address in addresses]
    for process in processes:
        process.start()
    for _ in processes:
        ready.get(timeout=120)
    with psycopg.connect(url) as conn:
        journal_before = conn.execute("SELECT coalesce(max(id), 0) FROM received_file").fetchone()[0]
    started = time.perf_counter()
    busy_before, _ = machine_busy()
    servers_before = [process_cpu(pid, children=True) or 0.0 for pid in server_pids]
    listing = IngestSummary()
    transport, sftp = sftp_session(addresses[0])
    try:
        with psycopg.connect(url) as conn:
            to_take = list_inbox(conn, SftpInbox(sftp), region, listing)
    finally:
        transport.close()
    for folder, files in sorted(to_take.items()):
        todo.put((folder, [vars(f) for f in files]))
    for _ in range(workers):
        todo.put(None)
    done = [results.get() for _ in processes]
    seconds = time.perf_counter() - started
    busy = machine_busy()[0] - busy_before
    for process in processes:
        process.join()
    servers_cpu = sum(_ended_sessions_cpu(pid) - before for pid, before in zip(server_pids, servers_before, strict=True))
    with psycopg.connect(url) as conn:
        loaded, per_file = conn.execute(
            "SELECT count(*) FILTER (WHERE status = 'loaded'), count(*) FROM received_file WHERE id > %s",
            (journal_before,)).fetchone()
        replaced = conn.execute("SELECT count(*) FROM file_day WHERE superseded_by > %s",
                                (journal_before,)).fetchone()[0]
    summary = IngestSummary.merged([d["summary"] for d in done])
    if summary.failed or loaded != len(to_take) or per_file != loaded:
        raise SystemExit(f"run with {workers} loader(s) is wrong: {loaded} loaded of {len(to_take)} "
                         f"({per_file} journal rows), failed: {summary.failed}")
    backends = [d["backend_cpu"] for d in done]  # None: a PostgreSQL on another machine
    cpu = {"loaders": sum(d["cpu"] for d in done), "backends": None if None in backends else sum(backends),
           "servers": servers_cpu, "busy": busy}
    return {"workers": workers, "seconds": seconds, "summary": summary, "loaders": done,
            "listing": listing.timings["listing"], "cores_busy": busy / seconds, "days_replaced": replaced,
            "cpu": cpu}


def _ended_sessions_cpu(server_pid: int) -> float:
    """The server's CPU once the sessions of the loaders (which have closed them) have ended:
    sshd's session processes count once their listener has waited for them."""
    deadline = time.monotonic() + 5
    while _children(server_pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    return process_cpu(server_pid, children=True) or 0.0


def generate(root: Path, establishments: list[dict], visits_per_day: float) -> int:
    visits = 0
    for i, establishment in enumerate(establishments):
        depot = root / establishment["finess"] / "depot"
        depot.mkdir(parents=True)
        path = depot / f"RPU_{establishment['finess']}.xml"
        visits += write_oscour_file(path, establishment["finess"], 0, END - timedelta(days=6), END,
                                    visits_per_day=visits_per_day, seed=i)
        stamp = time.time() - 600
        os.utime(path, (stamp, stamp))
    return visits


def generate_two_nights(first: Path, second: Path, establishments: list[dict], visits_per_day: float) -> int:
    """Two consecutive nights: each establishment's 8 days written once, then cut into the file
    of the night before (days 1-7) and the measured night's (days 2-8): the 6 days they share hold
    the same visits, as an establishment's consecutive extracts do. Returns the second night's visits."""
    visits = 0
    start = END - timedelta(days=7)
    first.mkdir(parents=True)
    for i, establishment in enumerate(establishments):
        whole = first.parent / f"{establishment['finess']}.8j.xml"
        write_oscour_file(whole, establishment["finess"], 0, start, END, visits_per_day=visits_per_day, seed=i)
        for root, (begin, end) in ((first, (start, END - timedelta(days=1))), (second, (start + timedelta(days=1), END))):
            depot = root / establishment["finess"] / "depot"
            depot.mkdir(parents=True)
            path = depot / f"RPU_{establishment['finess']}.xml"
            kept = _cut(whole, path, begin, end)
            stamp = time.time() - 600
            os.utime(path, (stamp, stamp))
        visits += kept
        whole.unlink()
    return visits


def _cut(whole: Path, path: Path, begin: date, end: date) -> int:
    """The visits of ``whole`` with ENTREE from ``begin`` to ``end``, as that period's extract."""
    tree = etree.parse(str(whole))
    header = tree.find("ETABLISSEMENT")
    header.find("DATEDEBUT").text, header.find("DATEFIN").text = f"{begin:%d/%m/%Y}", f"{end:%d/%m/%Y}"
    header.find("EXTRACT").text = f"{end + timedelta(days=1):%d/%m/%Y} 02:30:00"
    kept = 0
    for patient in tree.iter("PATIENT"):
        day = datetime.strptime(patient.findtext("ENTREE")[:10], "%d/%m/%Y").date()
        if begin <= day <= end:
            kept += 1
        else:
            patient.getparent().remove(patient)
    tree.write(str(path), xml_declaration=True, encoding="UTF-8")
    return kept


def report(run: dict) -> None:
    totals = run["summary"].totals()
    seconds = run["seconds"]
    print(f"  {run['workers']} loader(s): {seconds:.1f} s wall, {totals['loaded']} files, "
          f"{totals['visits_loaded']:,} visits ({totals['visits_loaded'] / seconds:,.0f} visits/s); "
          f"{run['days_replaced']} days replaced; listing {run['listing']:.1f} s; cores busy {run['cores_busy']:.2f} of {os.cpu_count()} "
          "(loaders + PostgreSQL + SFTP server)")
    print(f"    before the night, the day's listing that swept the archive folders: {run['sweep']:.1f} s")
    cpu = run["cpu"]
    if cpu["backends"] is not None:
        rest = cpu["busy"] - cpu["loaders"] - cpu["backends"] - cpu["servers"]
        print(f"    where the cores went (CPU s): loaders {cpu['loaders']:.1f}, their PostgreSQL backends "
              f"{cpu['backends']:.1f}, SFTP servers {cpu['servers']:.1f}, the listing and the rest {rest:.1f}")
    for loader_run in sorted(run["loaders"], key=lambda d: d["pid"]):
        part = loader_run["summary"]
        taken = sum(f["loaded"] + f["rejected"] + f["duplicate"] + f["superseded"]
                    for f in part["establishments"].values())
        steps = ", ".join(f"{step} {spent:.1f} s" for step, spent in part["timings"].items() if step != "listing")
        print(f"    loader pid {loader_run['pid']}: {taken} files in {part['seconds']:.1f} s ({steps}); "
              f"peak memory {loader_run['peak_mb']:.0f} MB")


def _airflow_nights(template: Path, establishments: list[dict], counts: list[int], repeat: int,
                    settings: dict[str, str]) -> None:
    from airflow_night import airflow_night

    def night(slots: int) -> dict:
        run = airflow_night(ADMIN_URL, template, establishments, slots, lambda: machine_busy()[0], settings)
        print(f"  Airflow, pool rpu_db of {slots} slot(s): run {run['run_seconds']:.0f} s, of which the "
              f"{run['loads']} loads {run['load_phase_seconds']:.0f} s (one load: median "
              f"{run['load_median_seconds']:.1f} s); cores busy {run['cores_busy']:.2f} of {os.cpu_count()}")
        return run

    print_speedups(in_rounds(counts, repeat, night), counts, "run_seconds", "slots (the run, through Airflow)")


def in_rounds(counts: list[int], repeat: int, night) -> list[dict[int, dict]]:
    """``night(count)`` for each count, ``repeat`` rounds, the order alternated (the first run of
    a round is not always the same count)."""
    return [{count: night(count) for count in (counts if number % 2 == 0 else counts[::-1])}
            for number in range(repeat)]


def print_speedups(rounds: list[dict[int, dict]], counts: list[int], seconds: str, unit: str) -> None:
    base = counts[0]
    for count in counts[1:]:
        speedups = [r[base][seconds] / r[count][seconds] for r in rounds]
        print(f"speedup {base} -> {count} {unit}: {statistics.median(speedups):.2f}x "
              f"(median of {len(speedups)}: {', '.join(f'{s:.2f}' for s in speedups)}; same night, same run)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--establishments", type=int, default=100)
    parser.add_argument("--visits-per-day", type=float, default=500)
    parser.add_argument("--workers", default="1", help="loader counts to run in turn, e.g. 1,2 (default 1)")
    parser.add_argument("--second-night", action="store_true",
                        help="measure the night after (each establishment's file replaces 6 days loaded the "
                             "night before, as in production); without it, the first night of a fresh database")
    parser.add_argument("--repeat", type=int, default=1,
                        help="rounds of the loader counts, in alternate order (the first run of a round is not "
                             "always the same count); the speedup quoted is the median of the rounds'")
    parser.add_argument("--archived-nights", type=int, default=0,
                        help="each establishment's traites/ first holds this many nights' files and reports "
                             "(365: a year), swept for links by a listing before the night, as once a day")
    parser.add_argument("--sftp-server", choices=("openssh", "python"),
                        default="openssh" if openssh_available() else "python",
                        help="OpenSSH's sshd with internal-sftp, as on the region's server (the default when "
                             "/usr/sbin/sshd is here), or the Python server of the tests")
    parser.add_argument("--sessions", choices=("task", "loader"), default="task",
                        help="task: each establishment opens its SFTP session and database connection, as each "
                             "load task instance does (the default); loader: once per loader process")
    parser.add_argument("--airflow", action="store_true",
                        help="the night through Airflow itself (scheduler, LocalExecutor, the pool rpu_db with W "
                             "slots, one load task instance per establishment): see airflow_night.py")
    parser.add_argument("--airflow-setting", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="with --airflow: an Airflow option for the run, e.g. "
                             "scheduler.scheduler_idle_sleep_time=0.2 (repeatable)")
    parser.add_argument("--france", action="store_true",
                        help=f"a night of France: {FRANCE_ESTABLISHMENTS} establishments x 7 days, "
                             f"{FRANCE_VISITS_PER_YEAR:,} visits a year (~420,000 in the night's files), 2 loaders")
    args = parser.parse_args()
    if args.france:
        args.establishments = FRANCE_ESTABLISHMENTS
        args.visits_per_day = FRANCE_VISITS_PER_YEAR / 365 / FRANCE_ESTABLISHMENTS
        if args.workers == "1":
            args.workers = "2"
    counts = [int(w) for w in args.workers.split(",")]
    if args.airflow and (args.second_night or args.archived_nights or args.sftp_server != "openssh"
                         or args.sessions != "task"):
        parser.error("--airflow takes a first night on OpenSSH's sshd, a session per load task: "
                     "without --second-night, --archived-nights, --sftp-server python, --sessions loader "
                     "(and OpenSSH's sshd installed: apt-get install openssh-server)")

    establishments = demo_establishments(args.establishments, seed=11)
    with tempfile.TemporaryDirectory(prefix="rpu-night-") as workdir:
        template, before = Path(workdir) / "night", None
        clock = time.perf_counter()
        if args.second_night:
            before = Path(workdir) / "night-before"
            visits = generate_two_nights(before, template, establishments, args.visits_per_day)
        else:
            visits = generate(template, establishments, args.visits_per_day)
        which = "the second night (6 of its 7 days replace the night before's)" if before else "a first night"
        taken_by = ("taken by Airflow" if args.airflow
                    else f"sessions: {SESSION_NAMES[args.sessions]}")
        print(f"{args.establishments} establishments, one 7-day file each: {visits:,} visits, {which} "
              f"(generated in {time.perf_counter() - clock:.0f} s); {os.cpu_count()} cores; SFTP server: "
              f"{SERVER_NAMES[args.sftp_server]}; {taken_by}")
        if args.airflow:
            _airflow_nights(template, establishments, counts, args.repeat,
                            dict(setting.split("=", 1) for setting in args.airflow_setting))
            return

        def loaders_night(workers: int) -> dict:
            run = one_night(template, establishments, workers, before, args.archived_nights, args.sftp_server,
                            args.sessions == "task")
            report(run)
            return run

        rounds = in_rounds(counts, args.repeat, loaders_night)
    print_speedups(rounds, counts, "seconds", "loaders")
    if args.france:
        night = rounds[-1][counts[-1]]
        # Each night's files carry the last 7 days: a night of France is ~420,000 visits loaded,
        # and a year of France (22 M visits) is 365 such nights (each visit loaded ~7 times).
        per_year = night["seconds"] * 365
        rate = night["summary"].totals()["visits_loaded"] / night["seconds"]
        print(f"a year of France ({FRANCE_VISITS_PER_YEAR:,} visits) on {night['workers']} loaders: 365 nights "
              f"like this one = {per_year / 3600:.1f} h of loading a year ({night['seconds'] / 60:.1f} min a night); "
              f"loaded once (a single backfill) at {rate:,.0f} visits/s: {FRANCE_VISITS_PER_YEAR / rate / 60:.0f} min")


if __name__ == "__main__":
    main()

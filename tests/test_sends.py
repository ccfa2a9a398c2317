"""The outbound journal (rpu.store.sends): one send delivered by one task at a time, a server down
journaled on every pending send, owner-only files, and the purge of delivered local copies.

Real PostgreSQL (a fresh database per test) and the real SFTP server of tests/conftest.py.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import psycopg
import pytest

from rpu.store import sends


def built(conn, folder: Path, name: str, destination: str = "invs", content: str = "<OSCOUR/>") -> sends.Send:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(content)
    return sends.record_built(conn, destination=destination, path=path, visit_count=1)


def advisory_locks(conn) -> int:
    # This test's database only: other test runs on the same server take advisory locks too.
    return conn.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND database ="
                        " (SELECT oid FROM pg_database WHERE datname = current_database())").fetchone()[0]


def sftp_session():
    from airflow.providers.sftp.hooks.sftp import SFTPHook

    return SFTPHook(ssh_conn_id="invs_outbox", conn_retry_attempts=1).get_managed_conn()


# --- one send, one delivery -------------------------------------------------------------------------

def test_a_send_being_delivered_is_skipped_by_a_second_task(db, conn, tmp_path):
    send = built(conn, tmp_path, "RPU_1.xml")
    second_calls = []

    def second(s: sends.Send) -> str:
        second_calls.append(s.id)
        return "déposé une seconde fois"

    with psycopg.connect(db, autocommit=True) as other:
        def first(s: sends.Send) -> str:
            # The replay task tries the same send while the daily task is uploading it.
            assert sends.attempt(other, send, second) is None
            assert sends.deliver_pending(other, "invs", second) == []
            return "déposé"

        delivered = sends.attempt(conn, send, first)
        assert (delivered.status, delivered.attempts, delivered.remote_answer) == ("sent", 1, "déposé")
        assert second_calls == []

        # Once delivered, a task holding a stale copy (status 'built') sends nothing again.
        assert send.status == "built"
        assert sends.attempt(other, send, second) is None
        assert sends.deliver_pending(other, "invs", second) == []
        assert second_calls == []
        assert sends.get(other, send.id).attempts == 1
        assert advisory_locks(conn) == 0  # released


def test_a_cancelled_send_is_never_delivered_and_the_lock_is_released_after_a_failure(conn, tmp_path):
    cancelled = built(conn, tmp_path, "RPU_1.xml")
    conn.execute("UPDATE send SET status = 'cancelled' WHERE id = %s", (cancelled.id,))
    assert sends.attempt(conn, cancelled, lambda s: pytest.fail("a cancelled send was delivered")) is None

    failing = built(conn, tmp_path, "RPU_2.xml")

    def refuse(s: sends.Send) -> str:
        raise sends.DeliveryError("disque plein")

    [result] = sends.deliver_pending(conn, "invs", refuse)
    assert (result.id, result.status, result.attempts, result.remote_answer) == (failing.id, "failed", 1, "disque plein")
    assert advisory_locks(conn) == 0
    [again] = sends.deliver_pending(conn, "invs", lambda s: "déposé")  # the lock did not outlive the failure
    assert (again.status, again.attempts) == ("sent", 2)


# --- the SFTP server down ----------------------------------------------------------------------------

def test_server_down_journals_every_pending_send_then_raises(conn, tmp_path, clean_sftp):
    first, second = built(conn, tmp_path, "RPU_1.xml"), built(conn, tmp_path, "RPU_2.xml")
    other = built(conn, tmp_path, "rpu.csv", destination="ars")
    clean_sftp.stop()
    try:
        with pytest.raises(sends.ServerUnreachable, match="serveur SFTP invs_outbox injoignable"):
            sends.deliver_pending_over(conn, "invs", sftp_session, "envois", server="invs_outbox",
                                       create_folder=True)
    finally:
        clean_sftp.start()
    journal = {s.id: s for s in (sends.get(conn, x.id) for x in (first, second, other))}
    for send in (first, second):
        assert (journal[send.id].status, journal[send.id].attempts) == ("failed", 1)
        assert journal[send.id].remote_answer.startswith("serveur SFTP invs_outbox injoignable : ")
    assert (journal[other.id].status, journal[other.id].attempts) == ("built", 0)  # another destination

    # The server is back: the same files go, into the folder created on the way.
    results = sends.deliver_pending_over(conn, "invs", sftp_session, "envois", create_folder=True)
    assert [(s.id, s.status, s.attempts) for s in results] == [(first.id, "sent", 2), (second.id, "sent", 2)]
    assert sorted(p.name for p in (clean_sftp.root / "envois").iterdir()) == ["RPU_1.xml", "RPU_2.xml"]
    # Nothing pending: no connection at all.
    assert sends.deliver_pending_over(conn, "invs", lambda: pytest.fail("connected"), "envois") == []


# --- owner-only files ----------------------------------------------------------------------------------

def test_a_leftover_part_file_does_not_keep_its_permissions(tmp_path):
    target = tmp_path / "rapport.csv"
    leftover = tmp_path / ".rapport.csv.part"
    leftover.write_text("ancien contenu")
    os.chmod(leftover, 0o644)
    with sends.private_file(target, "w", encoding="utf-8") as stream:
        stream.write("nouveau")
    assert target.read_text(encoding="utf-8") == "nouveau" and not leftover.exists()
    assert stat.S_IMODE(target.stat().st_mode) == 0o600

    with pytest.raises(RuntimeError), sends.private_file(target) as stream:  # on error, no .part left behind
        stream.write(b"moitie")
        raise RuntimeError("interrompu")
    assert not leftover.exists() and target.read_text(encoding="utf-8") == "nouveau"


# --- the purge of local copies ------------------------------------------------------------------------

def test_purge_removes_old_delivered_or_cancelled_copies_and_keeps_the_journal(conn, tmp_path):
    outbox = tmp_path / "envois" / "invs"
    old_sent = built(conn, outbox, "old_sent.xml")
    old_replay = built(conn, outbox / "reprises", "old_replay.xml")
    old_cancelled = built(conn, outbox, "old_cancelled.xml")
    recent_sent = built(conn, outbox, "recent_sent.xml")
    old_built = built(conn, outbox, "old_built.xml")
    old_failed = built(conn, outbox, "old_failed.xml")
    outside = built(conn, tmp_path / "ailleurs", "outside.xml")
    other_destination = built(conn, tmp_path / "envois" / "atih", "old_atih.zip", destination="atih")
    conn.execute("UPDATE send SET created_at = now() - interval '30 days'")
    conn.execute("UPDATE send SET status = 'sent', sent_at = now() - interval '8 days' WHERE id = ANY(%s)",
                 ([old_sent.id, old_replay.id, outside.id, other_destination.id],))
    conn.execute("UPDATE send SET status = 'sent', sent_at = now() - interval '6 days' WHERE id = %s",
                 (recent_sent.id,))  # built long ago, delivered 6 days ago: kept
    conn.execute("UPDATE send SET status = 'cancelled' WHERE id = %s", (old_cancelled.id,))
    conn.execute("UPDATE send SET status = 'failed' WHERE id = %s", (old_failed.id,))

    assert sends.purge_local_copies(conn, "invs", within=outbox) == 3
    gone = {old_sent.id, old_replay.id, old_cancelled.id}
    everything = [old_sent, old_replay, old_cancelled, recent_sent, old_built, old_failed, outside,
                  other_destination]
    for send in everything:
        assert Path(send.local_path).exists() == (send.id not in gone), send.file_name
    assert outbox.is_dir()  # the outbox itself stays (an emptied subfolder below it may go)
    assert conn.execute("SELECT count(*) FROM send").fetchone() == (len(everything),)  # the journal stays
    assert sends.purge_local_copies(conn, "invs", within=outbox) == 0  # already done
    assert sends.purge_local_copies(conn, "invs", older_than_days=5, within=outbox) == 1  # recent_sent

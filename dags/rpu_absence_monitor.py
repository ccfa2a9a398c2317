"""
### rpu_absence_monitor — veille quotidienne : qui n'a rien envoyé aujourd'hui ?

**Chaque jour à 10 h (heure de Paris)**, après la limite de dépôt de 4 h. Pour chaque établissement
**en parallèle** ou **en production** :

1. `wait_for_cutoff` attend l'heure limite de la région (`absence_cutoff` du fichier de région,
   10:00 par défaut). Le DAG est planifié à 10 h fixe (le fichier de région n'est pas lu à
   l'analyse du DAG) : une heure limite plus tardive fait attendre cette tâche (elle libère sa place
   entre deux vérifications) ; une heure limite plus matinale que 10 h n'avance pas le contrôle.
   Le **jour contrôlé** est la date (heure de Paris) de l'exécution planifiée. Une exécution
   déclenchée à la main (*Trigger*, sans date logique) contrôle le jour même, tout de suite.
2. `monitor_absences` : un jour sans **aucun fichier chargé** ouvre (ou prolonge) un *épisode
   d'absence*. Le jour même, **un seul e-mail** part à l'ARS (`ars_emails` de la région) et aux
   contacts (ARS et informatique) des établissements cités : chaque établissement silencieux et
   depuis quand, les **flux en forte baisse** (passages de la veille sous la moitié de la médiane
   des 8 mêmes jours de semaine précédents), les absences résorbées, et quoi faire.
   - Quand l'établissement renvoie des fichiers : si leurs périodes couvrent tous les jours
     manquants (fenêtre glissante de 7 jours), l'épisode est **résorbé** (« healed »), rien à faire ;
     sinon il passe en **reprise nécessaire** (« replay_needed ») et l'ARS reçoit un e-mail avec le
     FINESS, la période exacte à rejouer et le lien vers le DAG `rpu_invs_replay`.
   - Un épisode ouvert depuis 7 jours ou plus est signalé comme tel dans l'e-mail du jour.
3. `report_to_oru` : bilan quotidien à l'ORU (`operator_emails`) : absences en cours, reprises à
   faire, flux en baisse, et pour chaque établissement **en parallèle** sa série de jours corrects
   consécutifs (un fichier chargé, aucun rejeté) ; à 7 jours il est **éligible** au passage en
   production (`rpu establishments promote FINESS`).

**Idempotent** : relancer le DAG le même jour ne compte aucun jour deux fois et ne renvoie aucun
e-mail déjà parti. Les jours où le DAG n'a pas tourné (ordonnanceur arrêté) sont jugés à
l'exécution suivante, depuis le dernier fichier chargé de chaque établissement (31 jours au plus).

#### En cas d'échec

- **Base injoignable** : la tâche réessaie puis l'ORU reçoit un e-mail ; relancez (*Clear*) : rien
  n'est compté deux fois.
- **SMTP injoignable** : les jours sont enregistrés mais pas marqués « signalés » ; la relance
  envoie l'e-mail.
- **Un établissement signalé à tort** (fichier déposé après 10 h) : rien à faire ; son prochain
  fichier résorbe l'épisode.

#### Surveillance

La dernière tâche, `heartbeat`, s'exécute quand tout le reste a réussi (ou n'avait rien à faire) :
elle inscrit l'exécution réussie (lue par `rpu health`) et appelle l'adresse `[monitoring]
heartbeat_url` de la région si elle existe. Elle n'échoue jamais ; si les appels cessent, le service
de surveillance prévient l'ORU.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import CronTriggerTimetable, PokeReturnValue, dag, task

from rpu.airflow.feedback_tasks import add_heartbeat
from rpu.airflow.glue import SCHEDULE_TIMEZONE, default_args

TIMEZONE = SCHEDULE_TIMEZONE


def _run_day(logical_date, dag_run, tz: str):
    """The day a run judges: the local date of its logical date (its run date when a manual
    run has none)."""
    from zoneinfo import ZoneInfo

    moment = logical_date or dag_run.run_after
    return moment.astimezone(ZoneInfo(tz)).date()


@dag(
    dag_id="rpu_absence_monitor",
    schedule=CronTriggerTimetable("0 10 * * *", timezone=TIMEZONE),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(),
    doc_md=__doc__,
    tags=["rpu", "absence"],
)
def rpu_absence_monitor():
    @task.sensor(poke_interval=300, timeout=12 * 3600, mode="reschedule")
    def wait_for_cutoff(logical_date=None, dag_run=None) -> PokeReturnValue:
        from zoneinfo import ZoneInfo

        from rpu.airflow import glue

        region = glue.region()
        day = _run_day(logical_date, dag_run, region.timezone)
        if logical_date is None:  # triggered by hand without a date: judge now, as asked
            return PokeReturnValue(is_done=True, xcom_value=day.isoformat())
        cutoff = datetime.combine(day, region.absence_cutoff, ZoneInfo(region.timezone))
        return PokeReturnValue(is_done=datetime.now(ZoneInfo(region.timezone)) >= cutoff, xcom_value=day.isoformat())

    @task
    def monitor_absences(day: str) -> dict:
        from datetime import UTC, date

        from rpu.airflow import glue
        from rpu.flows import absence

        region = glue.region()
        with glue.database() as conn:
            result = absence.run_monitor(conn, region, date.fromisoformat(day), datetime.now(UTC), glue.send_mail)
        return result.as_dict()

    @task
    def report_to_oru(day: str) -> str:
        from datetime import UTC, date

        from airflow.sdk.exceptions import AirflowSkipException

        from rpu.airflow import glue
        from rpu.flows import absence_mail, replay

        region = glue.region()
        with glue.database() as conn:
            # The refused replay requests are listed in the digest: the replays give their lines.
            text = absence_mail.send_oru_digest(conn, region, date.fromisoformat(day), datetime.now(UTC),
                                                glue.send_mail, refusals=replay.refusals_digest)
        if text is None:
            raise AirflowSkipException(f"Bilan du {day} déjà envoyé à l'ORU.")
        return text

    day = wait_for_cutoff()
    monitor_absences(day) >> report_to_oru(day)


add_heartbeat(rpu_absence_monitor())

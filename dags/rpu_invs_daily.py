"""
### rpu_invs_daily — le fichier OSCOUR quotidien pour Santé publique France (OSCOUR / SurSaUD)

**Chaque jour à 05:30 (heure de Paris)**, après l'heure limite de dépôt des établissements (04:00) :

1. `plan_sends` : liste les établissements **en production** (`live`) dont des fichiers ont été
   chargés depuis leur dernier envoi ;
2. `build_send` : **une instance par établissement** de cette liste, nommée par son **FINESS**
   (onglet *Mapped Tasks* ; elle réessaie et alerte seule, dans le pool `rpu_db`), construit **un**
   fichier OSCOUR depuis la base régionale. Il
   couvre l'union des périodes de ces fichiers (premier DATEDEBUT → dernier DATEFIN), avec les données
   actuelles de la région pour cette période ; EXTRACT = l'heure de construction. Nom :
   `RPU_<FINESS>_<ORDRE>_<aaaammjjhhmmss>.xml`, conservé (lecture propriétaire seule) dans
   `<exports_dir>/envois/invs/`. Chaque fichier est inscrit au journal des envois (table `send`,
   destination `invs`) avec les fichiers reçus qu'il porte.
3. `deliver` : dépose sur le SFTP de Santé publique France (connexion `invs_outbox`, dossier = extra
   `path`) **tous** les envois en attente (construits ou en échec, y compris ceux des jours
   précédents et les reprises), sous un nom temporaire puis renommé. Un envoi n'est marqué `sent`
   qu'une fois le fichier complet renommé chez le destinataire ; un même envoi n'est jamais déposé
   deux fois, même quand une reprise (`rpu_invs_replay`) part au même moment. `deliver` s'exécute
   **même si un `build_send` (ou `plan_sends`) a échoué** : les envois en attente des jours précédents partent quand même
   (la tâche finit alors en échec pour signaler la construction manquée). Enfin, les copies locales
   (`envois/invs/` et `envois/invs/reprises/`) des envois livrés depuis plus de 7 jours sont
   supprimées ; le journal des envois les décrit toujours.

Ne sont **jamais** envoyés : les établissements `onboarding`, `parallel` (l'ancien concentrateur les
transmet encore), `inactive`, ni les fichiers chargés avant le passage en `live`. Relancer le DAG le
même jour n'envoie rien deux fois : un fichier reçu déjà porté par un envoi (envoyé ou en attente)
n'est pas reconstruit. `deliver` est **skipped** (gris) quand il n'y a rien à envoyer.

#### En cas d'échec

- **SFTP de Santé publique France injoignable** : chaque envoi en attente est noté en échec avec la
  cause (`send.remote_answer`), la tâche réessaie puis échoue et l'ORU reçoit un e-mail. Rien n'est
  perdu ni marqué envoyé : l'exécution suivante (ou un *Clear* de `deliver`) renvoie les fichiers
  déjà construits, sans les reconstruire. Vérifiez la connexion `invs_outbox`.
- **Un établissement non construit** (son instance `build_send` en échec, e-mail à l'ORU avec son
  FINESS ; erreur dans son journal) : les autres partent quand même, puis `deliver` échoue en le
  nommant ; ses fichiers restent dus et seront portés par le fichier du lendemain (ou *Clear* de
  son instance, puis de `deliver`).
- **`plan_sends` en échec** (base injoignable…) : `deliver` envoie quand même les envois déjà en
  attente, puis échoue ; rien n'est perdu, les fichiers reçus restent dus.
- **Base régionale injoignable** : vérifiez la connexion `rpu_db`, puis *Clear* de la tâche.
- Une interruption de plus de 7 jours ne se rattrape pas seule pour les jours non couverts par les
  fichiers reçus : l'ARS décide une reprise (`rpu_invs_replay`).

#### Surveillance

La dernière tâche, `heartbeat`, s'exécute quand tout le reste a réussi (ou n'avait rien à faire) :
elle inscrit l'exécution réussie (lue par `rpu health`) et appelle l'adresse `[monitoring]
heartbeat_url` de la région si elle existe. Elle n'échoue jamais ; si les appels cessent, le service
de surveillance prévient l'ORU.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import CronTriggerTimetable, dag, task

from rpu.airflow.feedback_tasks import add_heartbeat
from rpu.airflow.glue import DB_POOL, SCHEDULE_TIMEZONE, default_args


@dag(
    dag_id="rpu_invs_daily",
    # Fixed at 05:30 Europe/Paris (the region's schedule.invs_time documents it; the region file
    # is never read when a DAG file is parsed).
    schedule=CronTriggerTimetable("30 5 * * *", timezone=SCHEDULE_TIMEZONE),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(),
    doc_md=__doc__,
    tags=["rpu", "invs", "outbound"],
)
def rpu_invs_daily():
    @task
    def plan_sends() -> list[dict]:
        from rpu.airflow.outbound_tasks import invs_plan_task

        return invs_plan_task()

    # One instance per establishment to send, named by its FINESS in the UI.
    @task(pool=DB_POOL, map_index_template="{{ task.op_kwargs['establishment']['label'] }}")
    def build_send(establishment: dict) -> dict:
        from rpu.airflow.outbound_tasks import invs_build_task

        return invs_build_task(establishment)

    # Runs when builds (or the plan) failed too: the pending sends of earlier days (and replays) still go.
    @task(trigger_rule="all_done")
    def deliver(planned: list[dict] | None = None, built: list[dict] | None = None) -> dict:
        from rpu.airflow.outbound_tasks import invs_builds, invs_deliver_task

        return invs_deliver_task(invs_builds(planned, built))

    planned = plan_sends()
    deliver(planned, build_send.expand(establishment=planned))


add_heartbeat(rpu_invs_daily())

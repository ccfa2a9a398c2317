"""
### rpu_invs_replay — reprise (rejeu) d'un établissement et d'une période vers Santé publique France

**Manuel uniquement**, une exécution à la fois. Renvoie à Santé publique France les passages d'un
établissement pour une période, **reconstruits depuis la base régionale**, et inscrit l'envoi au
journal des envois (qui l'a demandé, quand, pourquoi, combien de passages).

Quand l'utiliser : le concentrateur envoie à l'ARS un e-mail « Reprise nécessaire » avec le FINESS
et la période exacte quand un établissement a été silencieux 7 jours ou plus (la fenêtre glissante
de 7 jours de ses fichiers ne rattrape plus les premiers jours manquants). Quand l'établissement a
renvoyé un fichier couvrant cette période, l'envoi quotidien (`rpu_invs_daily`) le transmet aussi le
lendemain matin et l'épisode se clôt de lui-même : la reprise sert à l'envoyer **sans attendre**,
ou quand Santé publique France redemande une période.

#### Pour l'ARS : demander une reprise

1. **Avant tout**, l'établissement doit avoir déposé un fichier couvrant la période, et ce fichier
   doit avoir été chargé (rapport dans son dossier `traites/`). Sans données dans la base
   régionale, la reprise est refusée.
2. Sur cette page, bouton **Déclencher** (*Trigger* si votre navigateur est en anglais) : le
   formulaire s'ouvre (la partie « Run Parameters » est le formulaire de la reprise ; laissez la
   « Date logique » telle quelle).
3. Remplissez, avec les valeurs de l'e-mail « Reprise nécessaire » :
   - **FINESS géographique** : les 9 caractères (ex. `670780691`) ;
   - **ORDRE** : laissez `0` sauf indication contraire dans l'e-mail ;
   - **Premier jour à renvoyer** / **Dernier jour à renvoyer** : dates d'entrée des passages,
     avec le sélecteur de date ; le dernier jour est antérieur à aujourd'hui, 366 jours au plus ;
   - **Simulation (rien n'est envoyé)** : **laissez coché** la première fois ;
   - **Motif** : inscrit au journal des envois (ex. « absence d'envoi du 02/03 au 12/03 »).
4. Bouton **Déclencher** en bas du formulaire. L'exécution apparaît dans l'onglet **Runs**.
   Simulation : ouvrez-la, tâche `build_file` : son journal (**Logs**) et son résultat (**XCom**,
   `per_day`) donnent le nombre de passages jour par jour. Vérifiez qu'aucun jour n'est
   anormalement vide ; la tâche `deliver` est « skipped » : rien n'a été envoyé.
5. **Déclenchez de nouveau** avec les mêmes valeurs et **Simulation décochée** : le fichier est
   construit, journalisé puis déposé chez Santé publique France (`deliver` en vert), et l'épisode
   d'absence correspondant est clos.

**Si la reprise est refusée**, la tâche `check_request` est rouge et son journal (**Logs**, ou
**XCom** `refus`) dit pourquoi, en français : clé de contrôle du FINESS fausse (une faute de
frappe ?), établissement inconnu du registre ou pas en production (en parallèle, c'est l'ancien
concentrateur qui transmet), fin avant le début ou pas antérieure à aujourd'hui, période de plus
de 366 jours, jours que la base régionale n'a pas (l'établissement doit d'abord envoyer ses
fichiers). Corrigez le formulaire et **déclenchez de nouveau** : un refus n'est pas une panne, il
n'alerte personne ; l'ORU le voit dans son bilan quotidien. Le formulaire lui-même refuse de partir
avec un FINESS qui n'a pas 9 caractères, une date invalide ou un motif de moins de 5 caractères.

Si une tâche `build_file` ou `deliver` est rouge, ne redéclenchez pas : l'ORU a reçu une alerte et
s'en occupe (ci-dessous).

#### Pour l'ORU (opérateur) : les pannes

- **`deliver` en échec** (serveur de Santé publique France injoignable) : le fichier construit est
  gardé et l'envoi reste au journal en « failed », avec la cause (`send.remote_answer`) ; la tâche
  réessaie, puis l'ORU reçoit un e-mail. Relancer la tâche (*Clear*) renvoie **le même fichier**,
  sans le reconstruire ; l'envoi quotidien (`rpu_invs_daily`) reprend aussi les envois en attente.
  Un même envoi n'est jamais déposé deux fois, même si les deux partent au même moment. Ne
  déclenchez pas une nouvelle reprise.
- **`build_file` ou `check_request` en échec avec un e-mail** : base régionale injoignable, ou
  données modifiées pendant la construction (un fichier chargé au même moment) ; relancez la tâche
  (*Clear*) une fois la cause réglée.
- Les refus (ci-dessus) n'envoient pas d'e-mail : ils sont listés une fois dans le bilan quotidien
  (`rpu_absence_monitor`), avec qui a demandé quoi et la réponse donnée.

Le même déclenchement en JSON (`airflow dags trigger -c`, ou l'API REST) :
`{"finess": "670780691", "ordre": 0, "start": "2026-03-02", "end": "2026-03-05", "dry_run": true,
"reason": "absence d'envoi du 03/03 au 12/03"}`
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import Param, dag, task

from rpu.airflow.glue import default_args

FINESS_PATTERN = r"^(?:[0-9]{2}|2[AB])[0-9]{7}$"


@dag(
    dag_id="rpu_invs_replay",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(),
    doc_md=__doc__,
    tags=["rpu", "invs", "replay"],
    params={
        "finess": Param(type="string", pattern=FINESS_PATTERN, title="FINESS géographique",
                        description="Les 9 caractères du FINESS du service d'urgences (ex. 670780691), "
                                    "tel qu'indiqué dans l'e-mail « Reprise nécessaire »."),
        "ordre": Param(0, type="integer", minimum=0, maximum=99, title="ORDRE",
                       description="Numéro d'ordre de l'unité sous ce FINESS : 0 presque toujours."),
        "start": Param(type="string", format="date", title="Premier jour à renvoyer",
                       description="Date d'entrée des premiers passages à renvoyer (AAAA-MM-JJ)."),
        "end": Param(type="string", format="date", title="Dernier jour à renvoyer",
                     description="Date d'entrée des derniers passages à renvoyer (AAAA-MM-JJ), antérieure à "
                                 "aujourd'hui ; 366 jours au plus depuis le premier."),
        "dry_run": Param(True, type="boolean", title="Simulation (rien n'est envoyé)",
                         description="Coché : construit le fichier et compte les passages par jour, sans rien "
                                     "envoyer. Décochez pour l'envoi réel, après une simulation."),
        "reason": Param(type="string", minLength=5, title="Motif",
                        description="Pourquoi cette reprise (inscrit au journal des envois), ex. « absence "
                                    "d'envoi du 02/03 au 12/03 »."),
    },
)
def rpu_invs_replay():
    @task
    def check_request(params=None, dag_run=None, ti=None) -> dict:
        """The params, checked against the registry and the regional database. A refusal is the
        ARS's answer (French, on the run: log and XCom « refus »), not an incident: no e-mail."""
        from zoneinfo import ZoneInfo

        from rpu.airflow import glue
        from rpu.flows import replay

        region = glue.region()
        # The user who triggered the run (UI, API); "inconnu" if Airflow does not say.
        requested_by = getattr(dag_run, "triggering_user_name", None) or "inconnu"
        with glue.database() as conn:
            try:
                request = replay.check_request(
                    conn, finess=params["finess"], ordre=params.get("ordre") or 0, start=params["start"],
                    end=params["end"], reason=params.get("reason"), dry_run=params.get("dry_run", True),
                    requested_by=requested_by, today=datetime.now(ZoneInfo(region.timezone)).date(),
                    tz=region.timezone)
            except replay.ReplayRefused as refusal:
                replay.record_refusal(conn, str(refusal), requested_by=requested_by,
                                      run_id=getattr(dag_run, "run_id", None), params=dict(params))
                glue.refuse(str(refusal), ti)
        return request.as_dict()

    @task
    def build_file(request: dict) -> dict:
        """Rebuild the OSCOUR file from the regional database; journal it unless dry run."""
        import logging
        import tempfile

        from rpu.airflow import glue
        from rpu.flows import replay
        from rpu.flows.invs import local_now

        log = logging.getLogger("rpu.flows.replay")
        checked = replay.ReplayRequest.from_dict(request)
        now = local_now(glue.region().timezone)  # the EXTRACT of the file, local time
        with glue.database() as conn:
            if checked.dry_run:
                with tempfile.TemporaryDirectory(prefix="rpu-reprise-") as workdir:
                    built = replay.build(conn, checked, workdir, now)  # built, counted, then deleted
                send_id = None
            else:
                built = replay.build(conn, checked, replay.spool_dir(glue.region()), now)
                send_id = replay.journal(conn, checked, built).id
        for line in built.report(checked):
            log.info("%s", line)
        return {"dry_run": checked.dry_run, "send_id": send_id, "file_name": built.path.name,
                "visits": built.visits, "per_day": {day.isoformat(): n for day, n in sorted(built.per_day.items())}}

    @task
    def deliver(built: dict) -> dict:
        """Deliver the journaled replay to Santé publique France, then close its episodes."""
        from datetime import UTC

        from airflow.sdk.exceptions import AirflowSkipException

        from rpu.airflow import glue
        from rpu.flows import replay

        if built["dry_run"]:
            raise AirflowSkipException(f"Simulation : rien n'est envoyé ({built['visits']} passages). Pour l'envoi "
                                       "réel, déclenchez de nouveau avec « Simulation » décochée.")
        with glue.database() as conn:
            # The SFTP server down: the attempt is journaled (failed, with the cause), then the task fails.
            send, closed = replay.deliver(conn, built["send_id"], lambda: glue.sftp_session(glue.INVS_CONN_ID),
                                          glue.sftp_base_path(glue.INVS_CONN_ID), datetime.now(UTC),
                                          server=glue.INVS_CONN_ID)
        if send.status != "sent":
            cause = send.remote_answer or "en cours de remise par une autre tâche (rpu_invs_daily)"
            raise RuntimeError(f"Envoi n°{send.id} non remis : {cause}. Le fichier est gardé ; "
                               "un nouvel essai le renverra tel quel.")
        return {"send_id": send.id, "status": send.status, "remote_answer": send.remote_answer,
                "episodes_closed": [row[0] for row in closed]}

    deliver(build_file(check_request()))


rpu_invs_replay()

"""
### rpu_ingest — les fichiers RPU des établissements, du SFTP à la base régionale

**Toutes les 15 minutes.** Pour chaque établissement déclaré dans la configuration de la région :

1. `sync_registry` aligne la table des établissements sur la configuration (changements de statut
   datés et signés) ;
2. `ingest_files` ouvre **une** session SFTP (`rpu_inbox`), liste chaque `<FINESS>/depot/`, prend
   les fichiers stables (ni `.part`/`.tmp`, ni taille/date changées depuis le passage précédent),
   les contrôle et les charge (une transaction par fichier), puis **après le commit** les déplace
   dans `traites/` ou `rejetes/` avec un `<nom>.rapport.txt` en français ;
3. `announce_new_data` met à jour l'Asset `rpu_regional_table` quand des passages ont été chargés
   pendant l'exécution (essais précédents de `ingest_files` compris) ;
4. `report_failures` échoue (et l'ORU reçoit l'e-mail) si un fichier a eu un échec inattendu : ce
   fichier est resté dans `depot/`, les autres ont été traités et annoncés.

`ingest_files` est **skipped** (gris) quand il n'y avait rien de nouveau. Son résultat (XCom
`return_value`) et son journal donnent, par établissement : chargés, rejetés, doublons, dépassés,
passages chargés.

#### Arborescence SFTP (à communiquer aux établissements)

```
<FINESS>/depot/     l'établissement dépose ici (nom libre, .xml ; écrire en .part puis renommer)
<FINESS>/traites/   fichiers pris en compte, avec leur rapport s'il y a des anomalies
<FINESS>/rejetes/   fichiers refusés, avec <nom>.rapport.txt expliquant pourquoi
```

#### En cas d'échec

- **SFTP injoignable / base injoignable** : la tâche réessaie (backoff) puis échoue et l'ORU reçoit
  un e-mail. Rien n'est perdu : chaque fichier est soit chargé et déplacé, soit encore dans
  `depot/`. Vérifiez la connexion (`rpu_inbox`, `rpu_db`) puis relancez la tâche (*Clear*).
- **Un fichier rejeté** n'est pas un échec du DAG : le rapport est dans `rejetes/` ; l'établissement
  corrige et redépose.
- **SENDER_MISMATCH / dossier inconnu** : l'ORU reçoit un e-mail ; déclarez l'établissement dans la
  configuration de la région (`rpu establishments sync`) ou corrigez le dépôt.
- **Échec inattendu sur un fichier** : le fichier reste dans `depot/`, les autres sont traités, puis
  la tâche échoue pour alerter ; lisez le journal de la tâche (aucune donnée patient n'y figure).

#### Surveillance

La dernière tâche, `heartbeat`, s'exécute quand tout le reste a réussi (ou n'avait rien à faire) :
elle inscrit l'exécution réussie (lue par `rpu health`) et appelle l'adresse `[monitoring]
heartbeat_url` de la région si elle existe. Elle n'échoue jamais ; si les appels cessent, le service
de surveillance prévient l'ORU.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import dag, task

from rpu.airflow_glue import RPU_TABLE, default_args
from rpu.feedback_tasks import add_heartbeat


@dag(
    dag_id="rpu_ingest",
    schedule="*/15 * * * *",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(),
    doc_md=__doc__,
    tags=["rpu", "ingest"],
)
def rpu_ingest():
    @task
    def sync_registry() -> list[str]:
        from rpu.tasks import sync_registry_task

        return sync_registry_task()

    @task
    def ingest_files() -> dict:
        from rpu.tasks import ingest_task

        return ingest_task()

    @task(outlets=[RPU_TABLE])
    def announce_new_data() -> int:
        from rpu.tasks import announce_task

        return announce_task()

    @task
    def report_failures(summary: dict) -> None:
        from rpu.tasks import report_failures_task

        report_failures_task(summary)

    summary = ingest_files()
    sync_registry() >> summary >> announce_new_data()
    report_failures(summary)


add_heartbeat(rpu_ingest())

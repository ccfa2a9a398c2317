"""
### rpu_ingest — les fichiers RPU des établissements, du SFTP à la base régionale

**Toutes les 15 minutes.** Pour chaque établissement déclaré dans la configuration de la région :

1. `sync_registry` aligne la table des établissements sur la configuration (changements de statut
   datés et signés) ;
2. `list_files` ouvre **une** session SFTP (`rpu_inbox`), liste chaque `<FINESS>/depot/` et retient
   les fichiers stables (ni `.part`/`.tmp`, ni taille/date changées depuis le passage précédent) ;
   quand il n'y a rien de nouveau, `load`, `announce_new_data` et `summarize` sont **skipped** (gris) ;
3. `load` : **une instance par établissement** ayant des fichiers, nommée par son **FINESS** (onglet
   *Mapped Tasks*). Chacune contrôle et charge les fichiers de son établissement (une transaction
   par fichier), puis **après le commit** les déplace dans `traites/` ou `rejetes/` avec un
   `<nom>.rapport.txt` en français. Elle réessaie, journalise et alerte **seule** : l'échec d'un
   établissement laisse les autres en vert, et l'e-mail d'échec donne son FINESS. Le pool Airflow
   `rpu_db` borne le nombre de chargements simultanés (`RPU_DB_POOL_SLOTS`, par défaut le nombre de
   cœurs) ;
4. `announce_new_data` met à jour l'Asset `rpu_regional_table` quand des passages ont été chargés
   pendant l'exécution (instances en échec et essais précédents compris) ;
5. `summarize` : bilan de l'exécution par établissement (chargés, rejetés, doublons, dépassés,
   passages chargés ; XCom `return_value` et journal) ; e-mail à l'ORU pour les fichiers déposés
   dans le dossier d'un autre établissement ; **échoue** (e-mail à l'ORU) si le `load` d'un
   établissement a échoué, pour que l'exécution apparaisse en rouge.

#### Arborescence SFTP (à communiquer aux établissements)

```
<FINESS>/depot/     l'établissement dépose ici (nom libre, .xml ; écrire en .part puis renommer)
<FINESS>/traites/   fichiers pris en compte, avec leur rapport s'il y a des anomalies
<FINESS>/rejetes/   fichiers refusés, avec <nom>.rapport.txt expliquant pourquoi
```

#### En cas d'échec

- **SFTP injoignable / base injoignable** : la tâche réessaie (backoff) puis échoue et l'ORU reçoit
  un e-mail. Rien n'est perdu : chaque fichier est soit chargé et déplacé, soit encore dans
  `depot/`. Vérifiez la connexion (`rpu_inbox`, `rpu_db`) puis relancez la tâche (*Clear*) : une
  instance `load` relancée ne reprend que les fichiers de son établissement encore dans `depot/`.
- **Un fichier rejeté** n'est pas un échec du DAG : le rapport est dans `rejetes/` ; l'établissement
  corrige et redépose.
- **SENDER_MISMATCH / dossier inconnu** : l'ORU reçoit un e-mail ; déclarez l'établissement dans la
  configuration de la région (`rpu establishments sync`) ou corrigez le dépôt.
- **Échec inattendu sur un fichier** : le fichier reste dans `depot/`, les autres fichiers de
  l'établissement sont traités, puis son instance `load` échoue (e-mail à l'ORU avec le FINESS) ;
  lisez le journal de cette instance (aucune donnée patient n'y figure). Les autres établissements
  ne sont pas touchés.
- **Des instances `load` restent « scheduled »** : le pool `rpu_db` manque (Admin → Pools ; il est
  créé par `airflow-init`) ou tous ses emplacements sont pris.

#### Surveillance

La dernière tâche, `heartbeat`, s'exécute quand tout le reste a réussi (ou n'avait rien à faire) :
elle inscrit l'exécution réussie (lue par `rpu health`) et appelle l'adresse `[monitoring]
heartbeat_url` de la région si elle existe. Elle n'échoue jamais ; si les appels cessent, le service
de surveillance prévient l'ORU.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import dag, task

from rpu.airflow.feedback_tasks import add_heartbeat
from rpu.airflow.glue import DB_POOL, RPU_TABLE, default_args


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
        from rpu.airflow.ingest_tasks import sync_registry_task

        return sync_registry_task()

    @task
    def list_files() -> list[dict]:
        from rpu.airflow.ingest_tasks import list_files_task

        return list_files_task()

    # One instance per establishment with files, named by its FINESS in the UI.
    @task(pool=DB_POOL, map_index_template="{{ task.op_kwargs['establishment']['finess'] }}")
    def load(establishment: dict) -> dict:
        from rpu.airflow.ingest_tasks import load_task

        return load_task(establishment)

    # Runs when loads failed too: what the others loaded is announced.
    @task(outlets=[RPU_TABLE], trigger_rule="all_done")
    def announce_new_data() -> int:
        from rpu.airflow.ingest_tasks import announce_task

        return announce_task()

    @task(trigger_rule="all_done")
    def summarize(planned: list[dict] | None, loaded: list[dict] | None) -> dict:
        from rpu.airflow.ingest_tasks import summarize_task

        return summarize_task(planned, loaded)

    planned = list_files()
    loaded = load.expand(establishment=planned)
    sync_registry() >> planned
    loaded >> announce_new_data()
    summarize(planned, loaded)


add_heartbeat(rpu_ingest())

"""
### rpu_ars_daily — l'export quotidien de la base régionale pour l'ARS

**Tous les jours à 06:00 (heure de Paris)**, après l'heure limite d'envoi des établissements (04:00).
Le jour de l'exécution est le **jour de l'export** (J) ; les fichiers contiennent les RPU dont la date
d'entrée va du **1er janvier jusqu'à la veille (J-1) incluse** (le 1er janvier : toute l'année
précédente).

1. `export` construit, depuis la base régionale et dans un même instantané de la base :
   - `rpu_<REGION>_<aaaa>_<aaaammjj>.csv` : un RPU par ligne, séparateur `;`, UTF-8 avec BOM,
     colonnes en français (`finess`, `ordre`, `code_postal`, `commune`, `date_naissance`, `sexe`,
     `date_entree` au format jj/mm/aaaa hh:mm, …, `diagnostics_associes` et `actes` séparés par
     des virgules, `anomalies` = codes des contrôles signalés). S'ouvre directement dans un tableur
     français ; importez `finess` et `code_postal` **en texte** pour garder les zéros initiaux. Une
     cellule qui commencerait par `=`, `+`, `-` ou `@` est précédée d'une apostrophe (protection
     contre les formules) ;
   - `rpu_<REGION>_<aaaa>_<aaaammjj>.parquet` : les mêmes lignes, typées (dates, listes) ;
   - `rapport_<REGION>_<aaaammjj>.html` : rapport autonome (s'ouvre hors ligne dans un navigateur) :
     activité quotidienne des 8 dernières semaines, exhaustivité et exploitabilité FEDORU par champ
     et établissement (vert ≥ 80 %), répartition CCMU, pyramide des âges, durées de passage,
     fichiers reçus et rejetés, délais de transmission (tableau et graphique) ;
   - `delais_<REGION>_<aaaa>_<aaaammjj>.csv` (compagnon du CSV) : par établissement et par jour d'entrée,
     le nombre de RPU, le délai médian sortie → réception par le concentrateur et la part reçue dans
     les 24 h et 48 h, puis réception → envoi à Santé publique France (mêmes mesures).

   Les fichiers sont gardés (lisibles par le seul compte du service) sous `<exports_dir>/ars/` et
   inscrits au **journal des envois** (table `send`, destination `ars`). Si l'export du jour existe
   déjà, rien n'est reconstruit.
2. `deliver` dépose chaque envoi en attente sur le SFTP de l'ARS (connexion `ars_outbox`, dossier
   de l'extra `path`) sous un nom temporaire `.<nom>.part`, vérifie la taille puis renomme : l'ARS ne
   voit jamais de fichier partiel. L'envoi passe à `sent` seulement alors. Les copies locales des
   exports livrés depuis plus de 7 jours sont supprimées.

Périmètre : établissements au statut `live` ou `inactive` (section `[ars] statuses` du fichier de
région pour le changer) ; un établissement en intégration ou en parallèle n'est pas exporté.

#### Déclenchement manuel

**Trigger** avec `date` (AAAA-MM-JJ, facultatif) pour produire l'export d'un autre jour, et
`force` coché pour reconstruire un export déjà construit (ses envois non livrés sont annulés).

#### En cas d'échec

- **`deliver` en échec** (SFTP de l'ARS injoignable, disque plein chez l'ARS…) : les fichiers
  construits sont gardés, leurs envois restent au journal en `failed` avec la réponse du serveur ;
  la tâche réessaie puis l'ORU reçoit un e-mail. Vérifiez la connexion `ars_outbox`, puis relancez
  `deliver` (*Clear*) : **les mêmes fichiers** sont renvoyés, sans reconstruction. Sinon
  l'exécution du lendemain livre aussi tout envoi resté en attente.
- **`export` en échec** : base injoignable, disque plein sous `exports_dir`, configuration de
  région invalide (message dans le journal de la tâche, aucune donnée patient n'y figure).
  Corrigez puis relancez (*Clear*) : aucun fichier partiel n'est journalisé.

#### Surveillance

La dernière tâche, `heartbeat`, s'exécute quand tout le reste a réussi (ou n'avait rien à faire) :
elle inscrit l'exécution réussie (lue par `rpu health`) et appelle l'adresse `[monitoring]
heartbeat_url` de la région si elle existe. Elle n'échoue jamais ; si les appels cessent, le service
de surveillance prévient l'ORU.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import CronTriggerTimetable, Param, dag, task

from rpu.airflow.feedback_tasks import add_heartbeat
from rpu.airflow.glue import SCHEDULE_TIMEZONE, default_args


@dag(
    dag_id="rpu_ars_daily",
    schedule=CronTriggerTimetable("0 6 * * *", timezone=SCHEDULE_TIMEZONE),
    start_date=pendulum.datetime(2026, 1, 1, tz=SCHEDULE_TIMEZONE),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(),
    doc_md=__doc__,
    tags=["rpu", "ars", "export"],
    params={
        "date": Param(None, type=["null", "string"], format="date", title="Jour de l'export (facultatif)",
                      description="AAAA-MM-JJ. Vide : le jour de l'exécution. Les données vont du 1er janvier "
                                  "à la veille de ce jour."),
        "force": Param(False, type="boolean", title="Reconstruire",
                       description="Coché : reconstruit l'export de ce jour même s'il existe déjà (ses envois "
                                   "non livrés sont annulés et remplacés)."),
    },
)
def rpu_ars_daily():
    @task
    def export() -> dict:
        from rpu.airflow.ars_tasks import export_task

        return export_task()

    @task
    def deliver() -> dict:
        from rpu.airflow.ars_tasks import deliver_task

        return deliver_task()

    export() >> deliver()


add_heartbeat(rpu_ars_daily())

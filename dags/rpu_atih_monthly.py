"""
### rpu_atih_monthly — le fichier SYRIUS mensuel pour l'ATIH, et le rapprochement

**Planifié chaque jour à 06:00 (heure de Paris) ; n'agit qu'à partir du jour `atih_day` du mois**
(fichier de la région, `[schedule] atih_day`, 10 par défaut ; avant ce jour `plan_month` est
*skipped*). Il traite alors le **mois précédent** (l'exécution de janvier traite décembre de l'année
précédente) :

1. `plan_month` : choisit le mois (paramètres `year` et `month`, sinon le mois précédent la date
   d'exécution) ;
2. `list_establishments` : les établissements **en production** (`live`) ; puis `build_file`, **une
   instance par établissement**, nommée par son **FINESS** (onglet *Mapped Tasks* ; elle réessaie et
   alerte seule, dans le pool `rpu_db`), construit son fichier SYRIUS
   anonymisé **cumulé du 1er janvier à la fin du mois** (CODEGEO, âge ; ni CP, ni commune, ni date de
   naissance), zippé, conservé dans `<exports_dir>/envois/atih/`, inscrit au journal des envois
   (destination `atih`). L'exécution planifiée ne construit que ce qui manque (rien deux fois ; un
   établissement passé `live` depuis est rattrapé le lendemain). Les établissements `parallel` ne sont
   pas envoyés : l'ancien concentrateur les envoie encore à l'ATIH ;
3. `deliver` (même si un `build_file` a échoué) : dépose les envois en attente : protocole Syrius en deux temps (contrôle `check=1`, puis
   dépôt `check=0` seulement si la réponse est OK ; connexion `atih_syrius`, hôte/chemin/identifiant/mot
   de passe e-PMSI), ou dépôt SFTP si la région a `[atih] delivery = "sftp"` (même connexion, de type
   sftp). Un envoi n'est `sent` que sur la réponse OK de l'ATIH. Les zips locaux des envois acceptés
   depuis plus de 7 jours (ou annulés) sont ensuite supprimés ; le journal des envois les décrit
   toujours ;
4. `reconcile` : écrit dans `<exports_dir>/rapprochement_atih/` le rapprochement
   (`atih_rapprochement_<aaaa>-<mm>.csv` : par établissement et par mois, dernier fichier, statut,
   réponse du serveur, RPU cumulés et RPU du mois) et la vue de l'année
   (`atih_vue_annuelle_<aaaa>.csv` : fichiers et RPU par mois) **à comparer avec la page de
   présentation de Syrius**, et les envoie par e-mail à l'ORU.

#### Relancer un mois passé

*Trigger DAG w/ config* avec `year` et `month` (par ex. `{"year": 2026, "month": 11}`) : le mois est
reconstruit pour tous les établissements `live` et renvoyé (nouvel envoi au journal ; un envoi plus
ancien du même mois encore en attente est annulé ; le rapprochement montre le plus récent). Le mois
doit être terminé.

#### En cas d'échec

- **Réponse KO de Syrius** : elle est dans le rapprochement (colonne `reponse_serveur`) et dans
  l'e-mail. Nombre de RPU ou schéma refusé : corrigez la cause puis relancez le mois. Identifiants
  refusés : corrigez la connexion `atih_syrius` puis *Clear* de `deliver` (le fichier n'est pas
  reconstruit).
- **Serveur injoignable** : chaque envoi en attente est noté en échec avec la cause (colonne
  `reponse_serveur` du rapprochement) ; la tâche réessaie puis échoue (e-mail à l'ORU) ; les envois
  restent en attente et repartent à l'exécution suivante (chaque jour à partir de `atih_day`) ou par
  *Clear*.
- **Pas de table CP → CODEGEO** : renseignez `[paths] codegeo_csv` dans le fichier de la région.
- **Un `build_file` en échec** (e-mail à l'ORU avec le FINESS ; cause dans le journal de cette
  instance) : les autres établissements partent ; corrigez puis *Clear* de cette instance, puis de
  `deliver` et `reconcile` (ou attendez l'exécution du lendemain, qui construit ce qui manque).
- `reconcile` échoue tant qu'un établissement `live` du mois n'est pas accepté par l'ATIH : le
  message dit lequel.

#### Surveillance

La dernière tâche, `heartbeat`, s'exécute quand tout le reste a réussi (ou n'avait rien à faire) :
elle inscrit l'exécution réussie (lue par `rpu health`) et appelle l'adresse `[monitoring]
heartbeat_url` de la région si elle existe. Elle n'échoue jamais ; si les appels cessent, le service
de surveillance prévient l'ORU.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import CronTriggerTimetable, Param, dag, task

from rpu.airflow.feedback_tasks import add_heartbeat
from rpu.airflow.glue import DB_POOL, SCHEDULE_TIMEZONE, default_args


@dag(
    dag_id="rpu_atih_monthly",
    # Daily, and the first task skips before the region's atih_day: the region file (where
    # atih_day lives) is read when a task runs, never when the DAG file is parsed. Running every
    # day from atih_day on also catches up a month that could not be sent on the day.
    schedule=CronTriggerTimetable("0 6 * * *", timezone=SCHEDULE_TIMEZONE),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(),
    doc_md=__doc__,
    tags=["rpu", "atih", "outbound"],
    params={
        "year": Param(None, type=["null", "integer"], minimum=2013, maximum=2100, title="Année",
                      description="Année du mois à relancer (avec month). Vide : le mois précédent."),
        "month": Param(None, type=["null", "integer"], minimum=1, maximum=12, title="Mois",
                       description="Mois à relancer, 1 à 12 (avec year). Vide : le mois précédent."),
    },
)
def rpu_atih_monthly():
    @task
    def plan_month() -> dict:
        from rpu.airflow.outbound_tasks import atih_plan_task

        return atih_plan_task()

    @task
    def list_establishments(plan: dict) -> list[dict]:
        from rpu.airflow.outbound_tasks import atih_establishments_task

        return atih_establishments_task()

    # One instance per live establishment, named by its FINESS in the UI.
    @task(pool=DB_POOL, map_index_template="{{ task.op_kwargs['establishment']['label'] }}")
    def build_file(plan: dict, establishment: dict) -> dict:
        from rpu.airflow.outbound_tasks import atih_build_task

        return atih_build_task(plan, establishment)

    # Runs when builds failed too: what was built goes out; skipped when the month was not due.
    @task(trigger_rule="all_done_min_one_success")
    def deliver(planned: list[dict] | None = None, built: list[dict] | None = None) -> dict:
        from rpu.airflow.outbound_tasks import atih_builds, atih_deliver_task

        return atih_deliver_task(atih_builds(planned, built))

    # Runs when deliver failed too: the ORU gets the table with ATIH's answers.
    @task(trigger_rule="all_done_min_one_success")
    def reconcile(plan: dict, planned: list[dict] | None = None, built: list[dict] | None = None) -> dict:
        from rpu.airflow.outbound_tasks import atih_builds, atih_reconcile_task

        return atih_reconcile_task(plan, atih_builds(planned, built))

    plan = plan_month()
    planned = list_establishments(plan)
    built = build_file.partial(plan=plan).expand(establishment=planned)
    delivered = deliver(planned, built)
    plan >> delivered
    delivered >> reconcile(plan, planned, built)


add_heartbeat(rpu_atih_monthly())

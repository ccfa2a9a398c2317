"""
### rpu_establishment_reports — le rapport de chaque établissement (rétro-information)

**Chaque jour à 07:00 (heure de Paris), n'agit que le jour des rapports** de la région : le lundi par
défaut (`[establishment_reports] frequency = "weekly"`, `weekday = "lundi"`), ou une fois par mois
(`frequency = "monthly"`, `day = 1`). Les autres jours `plan` est *skipped* (gris).

1. `plan` : la période = les **8 semaines** qui finissent la veille du jour de l'exécution ;
2. `build_reports` : pour chaque établissement `live`, `parallel` ou `onboarding`, une page HTML
   autonome en français (`rapport_<FINESS>_<ORDRE>_<début>_<fin>.html`) : passages par jour comparés à
   son niveau habituel, fichiers reçus / refusés / retenus avec les motifs, qualité FEDORU par champ
   (objectif 80 % et médiane régionale), valeurs codées les plus refusées, délais de transmission,
   ce qu'il faut corriger en priorité. **Aucune donnée identifiante** (ni date de naissance, ni code
   postal, ni commune, ni texte libre) et aucune donnée d'un autre établissement. Gardée (lecture
   propriétaire seule) sous `<exports_dir>/rapports_etablissements/<FINESS>/` et inscrite au journal
   `establishment_report` ; un rapport déjà construit pour la période n'est pas refait ;
3. `deliver` : dépose chaque rapport en attente dans **le dossier SFTP de l'établissement**
   `<FINESS>/rapports/` (connexion `rpu_inbox` ; nom temporaire puis renommage), puis l'envoie par
   e-mail à ses `it_contacts` (`[establishment_reports] email = "attachment"` : en pièce jointe ;
   `"link"` : l'e-mail donne seulement le chemin SFTP ; `"none"` : pas d'e-mail).

Le même rapport se construit à la main : `rpu report establishment FINESS --start AAAA-MM-JJ --end
AAAA-MM-JJ --output rapport.html`.

#### Déclenchement manuel

**Trigger** avec `date` (jour d'exécution simulé, AAAA-MM-JJ), `finess` (un seul établissement) et
`force` (reconstruire et redéposer un rapport déjà fait pour la période).

#### En cas d'échec

- **`build_reports`** : un établissement en erreur n'empêche pas les autres (son FINESS est dans le
  journal de la tâche, qui finit en échec) ; corrigez puis *Clear* : seuls les rapports manquants
  sont construits.
- **`deliver`** (SFTP `rpu_inbox` injoignable, e-mail refusé) : chaque rapport non déposé reste
  `failed` dans `establishment_report` avec l'erreur ; *Clear* de `deliver` (ou l'exécution suivante)
  le redépose, sans le reconstruire ; un e-mail n'est jamais envoyé deux fois.
- **Un établissement sans `it_contacts`** : le rapport est déposé, pas envoyé ; complétez le fichier
  de région.

#### Surveillance

La dernière tâche, `heartbeat`, inscrit l'exécution réussie (lue par `rpu health`) et appelle
`[monitoring] heartbeat_url` si la région en a une ; elle n'échoue jamais.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import CronTriggerTimetable, Param, dag, task

from rpu.airflow.feedback_tasks import add_heartbeat
from rpu.airflow.glue import SCHEDULE_TIMEZONE, default_args


@dag(
    dag_id="rpu_establishment_reports",
    # Daily, and plan skips on the days that are not report days: the region file (where the
    # day lives) is read when a task runs, never when the DAG file is parsed.
    schedule=CronTriggerTimetable("0 7 * * *", timezone=SCHEDULE_TIMEZONE),
    start_date=pendulum.datetime(2026, 1, 1, tz=SCHEDULE_TIMEZONE),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(),
    doc_md=__doc__,
    tags=["rpu", "etablissements", "rapports"],
    params={
        "date": Param(None, type=["null", "string"], format="date", title="Jour d'exécution (facultatif)",
                      description="AAAA-MM-JJ. Vide : aujourd'hui. La période est les 8 semaines qui finissent la "
                                  "veille ; un déclenchement manuel ne dépend pas du jour des rapports."),
        "finess": Param(None, type=["null", "string"], pattern="^([0-9]{2}|2[AB])[0-9]{7}$",
                        title="FINESS (facultatif)", description="Un seul établissement ; vide : tous."),
        "force": Param(False, type="boolean", title="Reconstruire",
                       description="Coché : reconstruit et redépose le rapport même s'il a déjà été fait."),
    },
)
def rpu_establishment_reports():
    @task
    def plan() -> dict:
        from rpu.airflow.feedback_tasks import plan_reports_task

        return plan_reports_task()

    @task
    def build_reports(period: dict) -> dict:
        from rpu.airflow.feedback_tasks import build_reports_task

        return build_reports_task(period)

    # Runs when build_reports failed too: the reports built go out.
    @task(trigger_rule="all_done_min_one_success")
    def deliver(built: dict | None = None) -> dict:
        from rpu.airflow.feedback_tasks import deliver_reports_task

        return deliver_reports_task(built)

    period = plan()
    delivered = deliver(build_reports(period))
    period >> delivered


add_heartbeat(rpu_establishment_reports())

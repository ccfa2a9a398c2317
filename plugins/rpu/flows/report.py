"""The French report an establishment reads about one of its files.

The same text is printed by ``rpu validate`` and written beside a processed file as
``<name>.rapport.txt`` by the ingest: the rule, the visit (position and ENTREE), the field,
the value received and what to fix.
"""

from __future__ import annotations

from collections import defaultdict

from rpu.formats.rules import FILE, RULES, Finding
from rpu.formats.validation import FileReport
from rpu.formats.wording import plural

# Examples shown per rule; the counts are always complete.
EXAMPLES_PER_RULE = 20


def _date(value) -> str:
    return value.strftime("%d/%m/%Y") if value else "?"


def format_report(report: FileReport, *, outcome: str | None = None, applied: str | None = None) -> str:
    """``outcome`` is the concentrator's decision when the file went through the loader
    (e.g. "chargé", "doublon"); without it the report only says accepted or rejected.
    ``applied`` says which days the file supplied and which a newer file did."""
    header = report.header
    lines = [f"Rapport de contrôle du fichier RPU : {report.file}", ""]
    verdict = "REJETÉ : aucun passage de ce fichier n'a été pris en compte." if report.rejected else (
        "ACCEPTÉ" + (f" ({outcome})" if outcome else ""))
    lines.append(f"Verdict : {verdict}")
    if applied:
        lines.append(f"Jours appliqués : {applied}")
    if header:
        lines.append(f"Établissement : FINESS {header.finess or '?'}, ORDRE {header.ordre if header.ordre is not None else '?'}")
        lines.append(f"Période déclarée : du {_date(header.period_start)} au {_date(header.period_end)}")
    lines.append(f"Passages lus : {report.records}")
    if not report.rejected:
        lines.append(f"Passages retenus : {report.kept_records}")
        lines.append(f"Passages rejetés (non datables) : {report.rejected_records}")
        lines.append(f"Passages retenus avec anomalie : {report.flagged_records}")
    lines.append("")

    file_findings = [f for f in report.findings if f.level == FILE]
    if file_findings:
        lines.append("Motif du rejet du fichier :")
        for finding in file_findings:
            lines.append(f"  [{finding.rule}] {finding.message}")
            lines.append(f"      À faire : {finding.fix}")
        lines.append("")
        lines.append("Corrigez le fichier puis déposez-le à nouveau dans votre dossier depot/.")
        return "\n".join(lines) + "\n"

    by_rule: dict[str, list[Finding]] = defaultdict(list)
    for finding in report.findings:
        by_rule[finding.rule].append(finding)
    if not by_rule:
        lines.append("Aucune anomalie.")
        return "\n".join(lines) + "\n"
    # Rejected visits first (they are missing from the regional data), then flags by frequency.
    order = sorted(by_rule, key=lambda code: (RULES[code].level != "record", -report.rule_counts[code], code))
    for code in order:
        rule = RULES[code]
        kind = "passage rejeté" if rule.level == "record" else "anomalie"
        lines.append(f"[{code}] {rule.title} ({plural(report.rule_counts[code], kind)})")
        lines.append(f"    À faire : {rule.fix}")
        for finding in by_rule[code][:EXAMPLES_PER_RULE]:
            lines.append(f"    - {finding.message}")
        hidden = report.rule_counts[code] - min(len(by_rule[code]), EXAMPLES_PER_RULE)
        if hidden > 0:
            lines.append(f"    … et {hidden} {'autre' if hidden == 1 else 'autres'}.")
        lines.append("")
    if report.findings_truncated:
        lines.append(f"Note : seules les {len(report.findings)} premières anomalies sont détaillées ici ; les "
                     "nombres ci-dessus sont complets.")
    if report.normalised_values:
        one = report.normalised_values == 1
        lines.append(f"Note : {plural(report.normalised_values, 'code')} "
                     f"{'reçu' if one else 'reçus'} en minuscules, avec des espaces ou avec un point (CIM-10) "
                     f"{'a été normalisé' if one else 'ont été normalisés'} ; merci de corriger l'export à terme.")
    return "\n".join(lines).rstrip() + "\n"


def needs_report(report: FileReport) -> bool:
    """A report goes back to the establishment for a rejected file, or an accepted file with
    rejected or flagged visits."""
    return report.rejected or report.rejected_records > 0 or report.flagged_records > 0

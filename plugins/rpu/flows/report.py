"""The French report an establishment reads about one of its files.

The same text is printed by ``rpu validate`` and written beside a processed file as
``<name>.rapport.txt`` by the ingest: the rule, the visit (position and ENTREE), the field,
the value received and what to fix. The words are in ``include/templates/file_report.txt.j2``;
here, what goes in it.
"""

from __future__ import annotations

from collections import defaultdict

from rpu.flows.plain_text import render
from rpu.formats.rules import FILE, RULES, Finding
from rpu.formats.validation import FileReport

# Examples shown per rule; the counts are always complete.
EXAMPLES_PER_RULE = 20


def format_report(report: FileReport, *, outcome: str | None = None, applied: str | None = None) -> str:
    """``outcome`` is the concentrator's decision when the file went through the loader
    (e.g. "chargé", "doublon"); without it the report only says accepted or rejected.
    ``applied`` says which days the file supplied and which a newer file did."""
    file_findings = [f for f in report.findings if f.level == FILE]
    return render("file_report.txt.j2", report=report, header=report.header, outcome=outcome, applied=applied,
                  file_findings=file_findings, groups=[] if file_findings else _groups(report))


def _groups(report: FileReport) -> list[dict]:
    """The findings by rule: rejected visits first (they are missing from the regional data),
    then flags by frequency; a few examples each, the count complete."""
    by_rule: dict[str, list[Finding]] = defaultdict(list)
    for finding in report.findings:
        by_rule[finding.rule].append(finding)
    order = sorted(by_rule, key=lambda code: (RULES[code].level != "record", -report.rule_counts[code], code))
    groups = []
    for code in order:
        rule, count = RULES[code], report.rule_counts[code]
        groups.append({
            "code": code, "title": rule.title, "fix": rule.fix, "count": count,
            "kind": "passage rejeté" if rule.level == "record" else "anomalie",
            "examples": [finding.message for finding in by_rule[code][:EXAMPLES_PER_RULE]],
            "hidden": count - min(len(by_rule[code]), EXAMPLES_PER_RULE),
        })
    return groups


def needs_report(report: FileReport) -> bool:
    """A report goes back to the establishment for a rejected file, or an accepted file with
    rejected or flagged visits."""
    return report.rejected or report.rejected_records > 0 or report.flagged_records > 0

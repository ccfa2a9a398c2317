"""Stable rule codes of every finding, with the French text an establishment reads.

A rule code never changes once published: reports, the journal and the quality indicators
refer to it. Each rule has a level: ``file`` (the whole file is rejected), ``record`` (that
visit is rejected, the rest of the file is loaded) or ``flag`` (the visit is kept and flagged).
"""

from __future__ import annotations

from dataclasses import dataclass

FILE, RECORD, FLAG = "file", "record", "flag"


@dataclass(frozen=True, slots=True)
class Rule:
    code: str
    level: str
    title: str  # what is wrong, in French
    fix: str  # what the establishment should do, in French


_RULES = [
    # The file cannot be trusted: rejected whole.
    Rule("EMPTY_FILE", FILE, "Le fichier est vide.",
         "Vérifiez l'export de votre logiciel d'urgences et renvoyez le fichier complet."),
    Rule("NOT_XML", FILE, "Le fichier n'est pas un XML bien formé.",
         "Le fichier doit être un XML OSCOUR ; vérifiez qu'il n'a pas été altéré (encodage, transfert en mode texte)."),
    Rule("TRUNCATED", FILE, "Le fichier est tronqué : il s'arrête avant la fin du document XML.",
         "Le transfert a probablement été interrompu ; renvoyez le fichier complet."),
    Rule("DTD_FORBIDDEN", FILE, "Le fichier contient une déclaration DOCTYPE, refusée pour raison de sécurité.",
         "Supprimez la ligne <!DOCTYPE ...> de l'export : le format OSCOUR n'en utilise pas."),
    Rule("WRONG_ROOT", FILE, "L'élément racine n'est pas <OSCOUR>.",
         "Le fichier doit commencer par <OSCOUR> ; vérifiez que vous envoyez bien l'export RPU."),
    Rule("UNKNOWN_ELEMENT", FILE, "Le fichier contient des éléments inconnus à la place des passages <PATIENT>.",
         "Chaque passage doit être un élément <PATIENT> (en majuscules), sous <PASSAGES> ; vérifiez l'export."),
    Rule("NAMESPACE_FORBIDDEN", FILE, "Le fichier contient des éléments dans un espace de noms XML (xmlns) : le "
         "format OSCOUR n'en utilise pas.",
         "Retirez les déclarations xmlns et les préfixes (x:ELEMENT) de l'export ; écrivez les éléments sans préfixe."),
    Rule("VALUE_TOO_LARGE", FILE, "Un élément du fichier contient un texte de plus de 10 Mo : le fichier ne peut "
         "pas être lu en sécurité.",
         "Un champ RPU tient en quelques caractères ; vérifiez l'export (un fichier entier ou un binaire inséré "
         "dans un champ)."),
    Rule("FILE_TOO_LARGE", FILE, "Le fichier dépasse la taille maximale acceptée par le concentrateur.",
         "Un fichier de 7 jours pèse quelques Mo ; vérifiez l'export, ou envoyez un rattrapage en plusieurs fichiers."),
    Rule("FILE_TOO_SLOW", FILE, "La lecture du fichier a dépassé le temps maximal accordé à un fichier.",
         "Vérifiez que le fichier est bien un export RPU ordinaire ; l'ORU est prévenu."),
    Rule("TECHNICAL_ERROR", FILE, "Erreur technique du concentrateur à la lecture de ce fichier : il n'a pas été "
         "chargé ; l'ORU est prévenu.",
         "Rien à faire de votre côté pour l'instant : l'ORU analyse l'erreur et vous recontacte si le fichier "
         "doit être corrigé."),
    Rule("HEADER_MISSING", FILE, "Le bloc <ETABLISSEMENT> est absent ou placé après les passages.",
         "Placez le bloc <ETABLISSEMENT> (FINESS, ORDRE, EXTRACT, DATEDEBUT, DATEFIN) en tête du fichier."),
    Rule("FINESS_MISSING", FILE, "Le FINESS de l'établissement est absent de l'en-tête.",
         "Renseignez <FINESS> avec le FINESS géographique du service d'urgences (9 caractères)."),
    Rule("FINESS_FORMAT", FILE, "Le FINESS de l'en-tête n'a pas le format attendu (9 caractères, département puis chiffres).",
         "Renseignez le FINESS géographique exact du service d'urgences."),
    Rule("FINESS_CHECK_DIGIT", FILE, "Le FINESS de l'en-tête a une clé de contrôle (dernier chiffre) fausse.",
         "Le FINESS contient probablement une faute de frappe ; vérifiez-le dans le répertoire FINESS."),
    Rule("ORDRE_INVALID", FILE, "Le numéro d'ORDRE de l'en-tête n'est pas un entier.",
         "Renseignez <ORDRE> avec un entier (0 le plus souvent)."),
    Rule("EXTRACT_INVALID", FILE, "La date d'extraction (EXTRACT) est absente ou illisible.",
         "Le format attendu est jj/mm/aaaa hh:mm:ss."),
    Rule("EXTRACT_IN_FUTURE", FILE, "La date d'extraction (EXTRACT) est postérieure à la réception du fichier.",
         "Vérifiez l'ordre jour/mois et l'année de EXTRACT, et l'horloge du serveur qui produit l'export."),
    Rule("DATEDEBUT_INVALID", FILE, "La date de début de période (DATEDEBUT) est absente ou illisible.",
         "Le format attendu est jj/mm/aaaa."),
    Rule("DATEFIN_INVALID", FILE, "La date de fin de période (DATEFIN) est illisible.",
         "Le format attendu est jj/mm/aaaa (ou vide)."),
    Rule("PERIOD_REVERSED", FILE, "La date de fin de période (DATEFIN) précède la date de début (DATEDEBUT).",
         "Vérifiez les dates de l'en-tête : DATEFIN doit être égale ou postérieure à DATEDEBUT."),
    Rule("PERIOD_TOO_LONG", FILE, "La période du fichier (DATEDEBUT à DATEFIN, ou à la date d'extraction si DATEFIN "
         "est vide) dépasse 366 jours.",
         "Un fichier RPU couvre les 7 derniers jours ; vérifiez DATEDEBUT et DATEFIN (une faute de frappe sur "
         "l'année, le plus souvent). Un rattrapage plus long se fait en plusieurs fichiers d'un an au plus."),
    Rule("SENDER_MISMATCH", FILE, "Le FINESS de l'en-tête n'est pas celui de l'établissement qui a déposé le fichier.",
         "Déposez le fichier dans le dossier de l'établissement qu'il concerne, ou corrigez le FINESS de l'en-tête."),
    # The visit is unusable: rejected, reported, the rest of the file is loaded.
    Rule("ENTREE_MISSING", RECORD, "La date d'entrée (ENTREE) est absente : le passage ne peut pas être daté.",
         "Renseignez ENTREE au format jj/mm/aaaa hh:mm pour chaque passage."),
    Rule("ENTREE_INVALID", RECORD, "La date d'entrée (ENTREE) est illisible : le passage ne peut pas être daté.",
         "Le format attendu est jj/mm/aaaa hh:mm (secondes tolérées)."),
    Rule("ENTREE_AFTER_EXTRACT", RECORD, "La date d'entrée (ENTREE) est postérieure à l'extraction du fichier "
         "(EXTRACT) : un passage ne peut pas entrer après l'extraction.",
         "Vérifiez l'horloge du logiciel d'urgences et la date d'EXTRACT de l'en-tête (jour et mois inversés, année)."),
    # The visit is kept and flagged.
    Rule("VALUE_NOT_IN_SET", FLAG, "La valeur n'appartient pas à la nomenclature du champ.",
         "Utilisez une des valeurs de la nomenclature OSCOUR de ce champ."),
    Rule("FORMAT_INVALID", FLAG, "La valeur n'a pas le format attendu pour ce champ.",
         "Vérifiez le paramétrage de l'export pour ce champ."),
    Rule("DATE_INVALID", FLAG, "La date est illisible.",
         "Le format attendu est jj/mm/aaaa (jj/mm/aaaa hh:mm pour SORTIE)."),
    Rule("SORTIE_BEFORE_ENTREE", FLAG, "La date de sortie précède la date d'entrée.",
         "Vérifiez les horodatages d'entrée et de sortie du passage."),
    Rule("STAY_TOO_LONG", FLAG, "La durée de passage dépasse 72 heures.",
         "Vérifiez la date de sortie ; un passage aux urgences dure rarement plus de 72 h."),
    Rule("AGE_OUT_OF_RANGE", FLAG, "L'âge calculé à l'entrée est hors de 0 à 120 ans.",
         "Vérifiez la date de naissance du patient."),
    Rule("ENTREE_OUTSIDE_PERIOD", FLAG, "La date d'entrée est hors de la période DATEDEBUT–DATEFIN de l'en-tête.",
         "Vérifiez la période déclarée dans l'en-tête ou la sélection des passages de l'export."),
    Rule("EXTENSION_MOVED", FLAG, "Élément d'extension placé hors des emplacements connus (HMED ou CIRCONSTANCE "
         "entre MOTIF et GRAVITE, les autres après ORIENT) : il est conservé et transmis après ORIENT.",
         "Placez les éléments propres à votre logiciel après ORIENT (ou HMED/CIRCONSTANCE entre MOTIF et GRAVITE)."),
    Rule("PROVENANCE_INCOHERENT", FLAG, "La PROVENANCE n'est pas cohérente avec le MODE_ENTREE.",
         "Mutation/transfert (6/7) : provenance 1 à 4 ; domicile (8) : provenance 5 ou 8 (6, 7 tolérés)."),
    Rule("DESTINATION_INCOHERENT", FLAG, "La DESTINATION n'est pas cohérente avec le MODE_SORTIE.",
         "Mutation/transfert (6/7) : destination 1 à 4 ; domicile (8) : vide, 6 ou 7 ; décès (9) : vide."),
    Rule("ORIENT_INCOHERENT", FLAG, "L'ORIENT n'est pas cohérente avec le MODE_SORTIE.",
         "Mutation/transfert (6/7) : HDT, HO, SC, SI, REA, UHCD, MED, CHIR, OBST ; domicile (8) : vide, FUGUE, SCAM, PSA, REO ; décès (9) : vide."),
]

RULES: dict[str, Rule] = {rule.code: rule for rule in _RULES}


@dataclass(slots=True)
class Finding:
    """One finding on a file (``record`` is None) or on one of its visits."""

    rule: str
    record: int | None = None  # 1-based PATIENT position
    field: str | None = None
    value: str | None = None  # the raw value as received (never logged)
    entree: str | None = None  # ENTREE as received, to name the visit to the establishment
    detail: str | None = None  # a precise French complement to the rule's title

    @property
    def level(self) -> str:
        return RULES[self.rule].level

    @property
    def message(self) -> str:
        """The French sentence an establishment's IT reads: which visit, which field, what."""
        where = []
        if self.record is not None:
            where.append(f"passage n°{self.record}" + (f" (entrée {self.entree})" if self.entree else ""))
        if self.field:
            where.append(f"champ {self.field}")
        if self.value is not None and self.value != "":
            where.append(f"valeur « {self.value[:60]} »")
        text = RULES[self.rule].title
        if self.detail:
            text = f"{text} {self.detail}"
        prefix = ", ".join(where)
        return f"{prefix[:1].upper()}{prefix[1:]} : {text}" if prefix else text

    @property
    def fix(self) -> str:
        return RULES[self.rule].fix

    def as_json(self) -> dict:
        return {"rule": self.rule, "record": self.record, "field": self.field, "message": self.message}

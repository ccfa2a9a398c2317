"""What happens to a synthetic patient: clinical cases by age band (DP, MOTIF, CCMU), how they
came, what was found and done, how and when they left; drawn once per file as a pool of blocks."""

from __future__ import annotations

import math
import random

from rpu.sandbox.file_style import FileStyle

# --- clinical cases ------------------------------------------------------------------------------

# (DP, SFMU-like MOTIF, CIM-10 MOTIF, free-text MOTIF, kind, weights for the five age bands)
_CASES = (
    # paediatrics
    ("J069", "PEDIATRIE03", "R509", "FIEVRE > 39 DEPUIS 48H", "medical_light", (9, 5, 1, 0.3, 0.2)),
    ("J210", "RESPI05", "R060", "GENE RESPIRATOIRE", "medical_mid", (7, 0, 0, 0, 0)),
    ("A099", "GASTRO04", "R11", "VOMISSEMENTS & DIARRHEE", "medical_light", (7, 5, 1.5, 0.6, 0.6)),
    ("R509", "PEDIATRIE03", "R509", "FIEVRE", "medical_light", (8, 3, 0.5, 0.3, 0.3)),
    ("H669", "ORL02", "H920", "OTALGIE", "medical_light", (4, 4, 0.5, 0.2, 0.1)),
    ("J040", "RESPI06", "R062", "TOUX RAUQUE", "medical_light", (2.5, 1.5, 0, 0, 0)),
    ("R560", "NEURO06", "R568", "CONVULSION", "medical_mid", (1.2, 0.4, 0, 0, 0)),
    ("S0600", "TRAUMATO02", "S060", "CHUTE DE LA TABLE A LANGER", "trauma_light", (2.5, 2, 0.5, 0.3, 0.8)),
    ("S5250", "TRAUMATO11", "S525", "CHUTE TROTTINETTE", "trauma_light", (0.2, 3, 0.8, 0.5, 0.8)),
    ("T179", "ORL05", "T179", "CORPS ETRANGER", "medical_light", (1.2, 0.8, 0.1, 0.1, 0.1)),
    ("K590", "GASTRO07", "R104", "DOULEUR ABDO", "medical_light", (1.5, 2.5, 0.5, 0.5, 0.8)),
    # traumatology
    ("S934", "TRAUMATO17", "S934", "ENTORSE CHEVILLE", "trauma_light", (0.1, 4, 5, 1.5, 0.3)),
    ("S610", "TRAUMATO14", "S610", "PLAIE DOIGT < 2 CM", "trauma_light", (0.2, 1.5, 3.5, 2, 0.5)),
    ("S0100", "TRAUMATO01", "S010", "PLAIE DU CUIR CHEVELU", "trauma_light", (1.5, 2, 1.2, 1, 2.5)),
    ("S628", "TRAUMATO12", "S628", "TRAUMATISME POIGNET", "trauma_light", (0.2, 2.5, 1.8, 1.5, 1.2)),
    ("S800", "TRAUMATO16", "S800", "CONTUSION GENOU", "trauma_light", (0.1, 1.5, 2, 1.3, 0.8)),
    ("S202", "TRAUMATO07", "S202", "CONTUSION THORAX", "trauma_light", (0, 0.3, 1.2, 1.2, 1.5)),
    ("S4220", "TRAUMATO09", "S422", "CHUTE SUR L'EPAULE", "trauma_light", (0, 0.5, 0.6, 0.8, 1.5)),
    ("M545", "RHUMATO02", "M545", "LOMBALGIE", "medical_light", (0, 0.2, 3, 2, 0.8)),
    ("S720", "TRAUMATO15", "S720", "CHUTE, IMPOTENCE MEMBRE INFERIEUR", "trauma_severe", (0, 0, 0.05, 0.4, 4)),
    ("S0650", "TRAUMATO02", "S065", "TC AVEC PC < 5 MIN", "trauma_severe", (0.05, 0.1, 0.3, 0.3, 0.8)),
    ("S3200", "TRAUMATO08", "S320", "AVP MOTO", "trauma_severe", (0, 0.05, 0.3, 0.2, 0.3)),
    # medicine
    ("R074", "CARDIO01", "R074", "DOULEUR THORACIQUE A L'EFFORT", "medical_mid", (0, 0.2, 3, 4, 2)),
    ("R101", "GASTRO01", "R101", "DOULEUR EPIGASTRIQUE", "medical_mid", (0, 0.5, 2.5, 2, 1.5)),
    ("R103", "GASTRO02", "R103", "DOULEUR FID", "medical_mid", (0, 0.8, 2, 0.8, 0.5)),
    ("N23", "URO01", "R10", "COLIQUE NEPHRETIQUE", "medical_mid", (0, 0.1, 2, 1.5, 0.3)),
    ("N390", "URO03", "R300", "BRULURES MICTIONNELLES", "medical_light", (0.3, 0.5, 1.5, 1, 2)),
    ("R51", "NEURO01", "R51", "CEPHALEES", "medical_light", (0, 0.8, 2, 1, 0.5)),
    ("R42", "NEURO04", "R42", "VERTIGES", "medical_light", (0, 0.1, 1, 1.5, 1.5)),
    ("H109", "OPHTALMO02", "H579", "OEIL ROUGE", "medical_light", (0.3, 0.4, 1.2, 0.8, 0.4)),
    ("L031", "DERMATO03", "L031", "DOIGT GONFLE", "medical_light", (0, 0.2, 0.8, 0.8, 0.5)),
    ("J189", "RESPI02", "R060", "DYSPNEE & FIEVRE", "medical_mid", (0.3, 0.3, 0.6, 1.5, 4)),
    ("R55", "NEURO03", "R55", "MALAISE", "medical_mid", (0, 0.5, 1.5, 1.5, 2.5)),
    ("R410", "NEURO05", "R410", "CONFUSION", "medical_mid", (0, 0, 0.05, 0.3, 2.5)),
    ("E86", "GENERAL02", "R530", "ALTERATION ETAT GENERAL", "medical_mid", (0.2, 0, 0.1, 0.4, 2.5)),
    ("R296", "TRAUMATO05", "R296", "CHUTE DANS L'ESCALIER", "medical_mid", (0, 0, 0, 0.3, 4)),
    ("I10", "CARDIO04", "I10", "TA > 18", "medical_light", (0, 0, 0.4, 1.2, 1)),
    ("K358", "GASTRO02", "R103", "DOULEUR FID & FIEVRE", "surgical", (0, 0.5, 0.8, 0.2, 0.1)),
    ("K810", "GASTRO01", "R101", "DOULEUR HYPOCONDRE DROIT", "surgical", (0, 0, 0.3, 0.5, 0.5)),
    ("K566", "GASTRO06", "R14", "ARRET DES MATIERES", "surgical", (0, 0, 0.1, 0.4, 1)),
    ("I214", "CARDIO01", "R074", "DOULEUR THORACIQUE", "medical_severe", (0, 0, 0.2, 0.8, 0.8)),
    ("I639", "NEURO02", "R470", "DEFICIT BRUTAL", "medical_severe", (0, 0, 0.1, 0.6, 1.2)),
    ("I509", "CARDIO03", "R060", "DYSPNEE & OEDEMES", "medical_severe", (0, 0, 0.05, 0.5, 2.5)),
    ("J441", "RESPI03", "R060", "DYSPNEE", "medical_severe", (0, 0, 0.05, 0.8, 1.2)),
    ("I269", "RESPI04", "R060", "DYSPNEE & DOULEUR THORACIQUE", "medical_severe", (0, 0, 0.1, 0.3, 0.3)),
    ("A419", "GENERAL03", "R509", "FIEVRE & HYPOTENSION", "medical_severe", (0.05, 0.02, 0.1, 0.3, 1)),
    ("I469", "CARDIO05", "I469", "ARRET CARDIAQUE", "dead", (0, 0, 0.005, 0.03, 0.06)),
    # psychiatry, intoxication
    ("F100", "INTOX02", "F100", "ALCOOLISATION AIGUE", "psy", (0, 0.2, 2, 0.8, 0.1)),
    ("F419", "PSY01", "F419", "ANGOISSE", "psy", (0, 0.4, 1.5, 0.5, 0.2)),
    ("F329", "PSY03", "F329", "IDEES NOIRES", "psy", (0, 0.3, 0.8, 0.4, 0.1)),
    ("T424", "INTOX01", "T424", "IMV BENZODIAZEPINES", "psy", (0, 0.3, 0.5, 0.2, 0.05)),
    ("F209", "PSY02", "F209", "AGITATION", "psy", (0, 0, 0.4, 0.1, 0)),
    # obstetrics
    ("O200", "GYNECO02", "O209", "METRORRAGIES", "obst", (0, 0, 1, 0, 0)),
    ("O470", "GYNECO04", "O479", "CONTRACTIONS", "obst", (0, 0, 0.6, 0, 0)),
    ("O210", "GYNECO03", "R11", "VOMISSEMENTS GROSSESSE", "obst", (0, 0, 0.3, 0, 0)),
)

_GRAVITY = {  # CCMU weights: 1, P, 2, 3, 4, 5, D
    "trauma_light": (42, 0, 55, 3, 0, 0, 0),
    "medical_light": (38, 0.3, 58, 3.7, 0, 0, 0),
    "medical_mid": (6, 0.5, 64, 27, 2.5, 0, 0),
    "trauma_severe": (0, 0, 38, 50, 9, 3, 0),
    "medical_severe": (0, 0, 8, 55, 28, 9, 0),
    "surgical": (0, 0, 45, 50, 5, 0, 0),
    "psy": (3, 60, 30, 7, 0, 0, 0),
    "obst": (10, 0, 70, 20, 0, 0, 0),
    "dead": (0, 0, 0, 0, 0, 0, 100),
}
_GRAVITY_CODES = ("1", "P", "2", "3", "4", "5", "D")

# Probability of a hospitalisation (MODE_SORTIE 6/7) by kind and CCMU.
_HOSP = {"1": 0.01, "P": 0.3, "2": 0.1, "3": 0.6, "4": 0.92, "5": 0.95}
_HOSP_KIND = {"surgical": 0.85, "trauma_severe": 0.8, "medical_severe": 0.85}
_ORIENT_HOSP = {  # ORIENT after 6/7, by kind (the first ORIENT list)
    "trauma_light": (("CHIR", 6), ("UHCD", 4)),
    "medical_light": (("UHCD", 5), ("MED", 5)),
    "medical_mid": (("UHCD", 5), ("MED", 6), ("SC", 0.5), ("CHIR", 0.5)),
    "trauma_severe": (("CHIR", 7), ("UHCD", 2), ("SC", 1), ("REA", 0.5)),
    "medical_severe": (("MED", 6), ("SC", 2.5), ("SI", 2.5), ("UHCD", 2), ("REA", 1)),
    "surgical": (("CHIR", 9), ("UHCD", 1)),
    "psy": (("UHCD", 4), ("MED", 1), ("HO", 1), ("HDT", 3)),
    "obst": (("OBST", 9), ("UHCD", 1)),
}
_ORIENT_CRITICAL = (("REA", 5), ("SI", 3), ("SC", 2))

_TRANSPORT = {  # PERSO, AMBU, VSAB, SMUR, HELI, FO
    "1": (88, 4, 5, 0, 0, 3), "2": (70, 14, 13, 1, 0.2, 1.8), "3": (35, 30, 25, 8, 1, 1),
    "4": (5, 15, 30, 45, 5, 0), "5": (2, 8, 30, 52, 8, 0), "P": (45, 15, 15, 1, 0, 24),
    "D": (0, 5, 35, 60, 0, 0),
}
_TRANSPORT_CODES = ("PERSO", "AMBU", "VSAB", "SMUR", "HELI", "FO")

_DA = {
    "common": ("I10", "E119", "Z880", "F171", "E660", "Z921", "J449", "N189", "I259"),
    "old": ("I10", "E119", "F03", "G309", "Z921", "I509", "N189", "R296", "Z741", "E440"),
    "child": ("R509", "J069", "R11", "Z290", "J303"),
    "trauma": ("W19", "W010", "X59", "V234", "W220", "Z040"),
    "psy": ("F102", "Z915", "F329", "X619", "Z630"),
    "obst": ("Z3490", "O998", "Z3491"),
}
_ACTES = {
    "trauma": ("MZQK002", "NDQK001", "MGQK003", "LAQK013", "QZJA002", "QAJA013", "MZMP007", "NJMP001"),
    "medical": ("DEQP003", "ZBQK002", "ZCQM001", "ACQK001", "DEQP005", "EQQP008", "GLLD015", "HEQE002"),
    "psy": ("ACQK001", "DEQP003"),
    "obst": ("JQQM010", "JKQE001", "ZCQM004"),
}
_CIRCONSTANCE = ("CHUTE", "SPORT", "DOMESTIQUE", "AVP", "TRAVAIL", "RIXE", "SCOLAIRE")


class ClinicalBlock:
    """One clinical situation (everything but who, where and when), rendered once per file."""

    __slots__ = ("sexe", "mode_entree", "provenance", "transport", "transport_pec", "motif", "gravite", "dp",
                 "da", "actes", "circonstance", "mode_sortie", "destination", "orient", "uhcd", "stay",
                 "sexe_f", "a_f", "a1_f", "a2_f", "exit_f", "uhcd_f")

    def __init__(self, **values):
        for name, value in values.items():
            setattr(self, name, value)

    def copy(self, **changes) -> ClinicalBlock:
        values = {name: getattr(self, name) for name in self.__slots__[:16]}
        values.update(changes)
        return ClinicalBlock(**values)

    def render(self, style: FileStyle) -> ClinicalBlock:
        el, code = style.el, style.code
        self.sexe_f = el("SEXE", code("SEXE", self.sexe))
        self.a1_f = (
            el("MODE_ENTREE", self.mode_entree) + el("PROVENANCE", self.provenance)
            + el("TRANSPORT", code("TRANSPORT", self.transport))
            + el("TRANSPORT_PEC", code("TRANSPORT_PEC", self.transport_pec))
            + el("MOTIF", style.text(self.motif))
        )
        self.a2_f = (
            el("GRAVITE", code("GRAVITE", self.gravite)) + el("DP", code("DP", self.dp))
            + style.liste("LISTE_DA", "DA", self.da) + style.liste("LISTE_ACTES", "ACTE", self.actes)
        )
        self.a_f = self.a1_f + self.a2_f
        if style.extensions:
            self.a2_f = el("CIRCONSTANCE", self.circonstance) + self.a2_f
        self.exit_f = (el("MODE_SORTIE", self.mode_sortie) + el("DESTINATION", self.destination)
                       + el("ORIENT", code("ORIENT", self.orient)))
        if self.uhcd:
            mode, dest, orient = self.uhcd
            self.uhcd_f = (el("MODE_SORTIE_UHCD", mode) + el("DESTINATION_UHCD", dest)
                           + el("ORIENT_UHCD", code("ORIENT_UHCD", orient)))
        else:
            self.uhcd_f = ""
        return self


def _pick(rng: random.Random, pairs) -> str:
    values, weights = zip(*pairs, strict=True)
    return rng.choices(values, weights)[0]


_BAND_CASES = [([c for c in _CASES if c[5][band] > 0], [c[5][band] for c in _CASES if c[5][band] > 0])
               for band in range(5)]


def draw_block(rng: random.Random, band: int) -> ClinicalBlock:
    cases, weights = _BAND_CASES[band]
    dp, sfmu, cim_motif, free_motif, kind, _ = rng.choices(cases, weights)[0]
    gravite = rng.choices(_GRAVITY_CODES, _GRAVITY[kind])[0]
    old, child = band == 4, band <= 1
    # who, how they came
    if kind == "obst":
        sexe = "F"
    else:
        sexe = rng.choices(("M", "F", "I"), (50.5, 49.3, 0.2))[0]
    r = rng.random()
    if r < (0.91 if old else 0.955):
        mode_entree, provenance = "8", ("5" if rng.random() < 0.88 else "8")
    elif r < (0.985 if old else 0.99):
        mode_entree, provenance = "7", rng.choices("1234", (80, 10 if old else 4, 6 if old else 1, 4))[0]
    else:
        mode_entree, provenance = "6", ("4" if kind == "psy" else "1")
    weights = list(_TRANSPORT[gravite])
    if old:
        weights[0] *= 0.5
        weights[1] *= 2.5
    if child:
        weights[5] = 0  # no police escort for children
    transport = rng.choices(_TRANSPORT_CODES, weights)[0]
    if mode_entree != "8" and transport in ("PERSO", "FO"):
        transport = "AMBU"  # a transfer between facilities
    if rng.random() < 0.02:
        transport_pec = ""
    elif transport in ("SMUR", "HELI"):
        transport_pec = "MED"
    elif transport == "VSAB":
        transport_pec = "PARAMED" if rng.random() < 0.8 else "AUCUN"
    elif transport == "AMBU":
        transport_pec = "PARAMED" if rng.random() < 0.4 else "AUCUN"
    else:
        transport_pec = "AUCUN"
    r = rng.random()
    motif = sfmu if r < 0.74 else cim_motif if r < 0.94 else free_motif if r < 0.98 else ""
    # what was found and done
    da_pool = _DA["old" if old else "child" if child else "common"]
    if kind.startswith("trauma"):
        da_pool += _DA["trauma"]
    elif kind in ("psy", "obst"):
        da_pool += _DA[kind]
    n_da = rng.choices((0, 1, 2, 3), (35, 30, 20, 15) if old else (60, 25, 10, 5))[0]
    da = tuple(rng.sample([c for c in da_pool if c != dp], n_da))
    actes_pool = _ACTES["trauma" if kind.startswith("trauma") else kind if kind in _ACTES else "medical"]
    n_actes = rng.choices((0, 1, 2, 3), (45, 30, 15, 10))[0]
    actes = tuple(rng.sample(actes_pool, min(n_actes, len(actes_pool))))
    circonstance = rng.choice(_CIRCONSTANCE) if kind.startswith("trauma") and rng.random() < 0.8 else ""
    # how they left
    uhcd = None
    if kind == "dead":
        mode_sortie, destination, orient, stay = "9", "", "", "short"
    else:
        p_hosp = max(_HOSP[gravite], _HOSP_KIND.get(kind, 0))
        if old:
            p_hosp = min(0.97, p_hosp * 1.6)
        elif child:
            p_hosp *= 0.7
        if rng.random() < p_hosp:
            mode_sortie = "7" if rng.random() < 0.13 else "6"
            if gravite in ("4", "5") and rng.random() < 0.6:
                orient = _pick(rng, _ORIENT_CRITICAL)
            else:
                orient = _pick(rng, _ORIENT_HOSP[kind])
            if orient in ("HDT", "HO"):
                destination = "4"
            elif kind == "psy" and mode_sortie == "7" and orient == "MED":
                destination = "4"
            elif old and orient == "MED" and rng.random() < 0.15:
                destination = rng.choice("23")
            else:
                destination = "1"
            stay = "hosp"
            if orient == "UHCD":
                uhcd = rng.choices((("8", "", ""), ("6", "1", "MED"), ("6", "1", "CHIR"), ("7", "1", "MED")),
                                   (60, 28, 8, 4))[0]
        elif gravite == "5" and rng.random() < 0.5:
            mode_sortie, destination, orient, stay = "9", "", "", "hosp"
        else:
            mode_sortie, destination, stay = "8", "", "light"
            r = rng.random()
            if kind == "psy":
                orient = "SCAM" if r < 0.06 else "FUGUE" if r < 0.11 else "PSA" if r < 0.14 else ""
            else:
                orient = "PSA" if r < 0.025 else "REO" if r < 0.035 else "SCAM" if r < 0.042 else (
                    "FUGUE" if r < 0.045 else "")
            if orient in ("PSA", "REO", "FUGUE"):
                stay = "short"
            if old and not orient and rng.random() < 0.03:
                destination = "7"  # back to a nursing home (médico-social)
    if orient in ("PSA", "REO", "FUGUE") and rng.random() < 0.6:
        dp, da, actes = "", (), ()  # never seen by a doctor: no diagnosis
    elif rng.random() < 0.025:
        dp = ""  # not coded (exhaustivité below 100 %)
    return ClinicalBlock(sexe=sexe, mode_entree=mode_entree, provenance=provenance, transport=transport,
                  transport_pec=transport_pec, motif=motif, gravite=gravite, dp=dp, da=da, actes=actes,
                  circonstance=circonstance, mode_sortie=mode_sortie, destination=destination, orient=orient,
                  uhcd=uhcd, stay=stay)


_STAYS = {  # median minutes, sigma of the log, bounds
    "short": (55, 0.5, 30, 180),
    "light": (150, 0.55, 30, 720),
    "hosp": (300, 0.5, 60, 840),
}
STAY_POOL = 1024


def stay_pools(rng: random.Random) -> dict[str, list[int]]:
    pools = {}
    for name, (median, sigma, low, high) in _STAYS.items():
        mu = math.log(median)
        pools[name] = [min(high, max(low, round(rng.lognormvariate(mu, sigma)))) for _ in range(STAY_POOL)]
    return pools

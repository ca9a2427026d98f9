"""Names shared by every stage: the three classes and the two prospectus sections."""

CLASSES: tuple[str, ...] = ("Performing", "Extended", "Defaulted")
CLASS_INDEX: dict[str, int] = {name: i for i, name in enumerate(CLASSES)}
DISTRESSED: frozenset[str] = frozenset({"Extended", "Defaulted"})

SECTIONS: tuple[str, ...] = ("important_notice", "risk_factors")
SECTION_LABELS: dict[str, str] = {"important_notice": "Important Notice", "risk_factors": "Risk Factors"}

# Scores of the three classes as output columns (predictions, packaged model, scored folders).
PROBABILITY_COLUMNS: list[str] = [f"p_{c}" for c in CLASSES]

# Table files of an input folder (DESIGN.md section 2); each may be .parquet or .csv.
PANEL, MACRO, PROSPECTUS, LABELS = "panel", "macro", "prospectus", "labels"

# Text features written by flows/embed.py and read by emdlot.data.assemble:
# one row per firm, column "firm_id", then TEXT_DIMS principal components per section.
TEXT_DIMS = 40


def text_feature_column(section: str, component: int) -> str:
    """Column name of principal component `component` (0-based) of `section`."""
    return f"{section}_pc{component + 1:02d}"

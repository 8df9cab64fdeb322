"""IndoNLU's published test F1 per dataset (Wilie et al., 2020, Table 5; read off the repository's result image, see
shared/docs/INDONLU_BASELINES.md), to place our teachers beside the paper's: IndoNLU's figures, never ours.

Classification: macro-F1 (CASA/HoASA over the flattened aspects); tagging: IndoNLU's type-macro chunk F1, the
metrics kdlib.metrics computes.
"""
from __future__ import annotations

import pandas as pd

DATASETS = ("emot", "smsa", "casa", "hoasa", "wrete", "posp", "bapos", "terma", "keps", "nergrit", "nerp", "facqa")
TABLE5: dict[str, tuple[float, ...]] = {  # in DATASETS order
    "fastText-indo4b": (69.23, 82.13, 82.20, 85.88, 60.42, 94.94, 81.77, 74.43, 56.70, 38.69, 46.79, 14.65),
    "XLM-R base": (71.15, 91.39, 91.71, 91.57, 79.95, 95.16, 84.64, 90.99, 68.82, 79.09, 75.03, 64.58),
    "IndoBERT base (p1)": (75.48, 87.73, 93.23, 92.07, 78.55, 95.26, 87.09, 90.73, 70.36, 69.87, 75.52, 53.45),
}
SHOWN = ("IndoBERT base (p1)", "XLM-R base", "fastText-indo4b")  # the paper's teacher, the nearest encoder, no BERT


def published(dataset: str) -> dict[str, float]:
    """IndoNLU's figure of each SHOWN model on `dataset` ({} for a dataset outside IndoNLU)."""
    if dataset not in DATASETS:
        return {}
    i = DATASETS.index(dataset)
    return {model: TABLE5[model][i] for model in SHOWN}


def teachers_beside_indonlu(frame: pd.DataFrame) -> pd.DataFrame:
    """Each teacher run's test F1 (%) beside IndoNLU's published figures for its dataset, and the gap to each."""
    rows = []
    for _, r in frame[frame["stage"] == "teacher"].iterrows():
        ours = 100 * r["f1"]
        row = {"dataset": r["dataset"], "our teacher": round(ours, 2)}
        for model, value in published(r["dataset"]).items():
            row[f"{model} (IndoNLU)"] = value
            row[f"Δ to {model}"] = round(ours - value, 2)
        rows.append(row)
    return pd.DataFrame(rows)

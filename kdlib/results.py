"""A study's results as tables: every metrics.json of a study in one tidy DataFrame (`collect`), the model costs from
every profile.json, and the analysis built on them.

Scores are stored on IndoNLU's 0..1 scale and shown as percentages (F1 × 100) in tables (kdlib.plots draws them).

The analysis (notebooks/07_analysis, `kdexam recommend`) goes: `study_frame` (every finished teacher/student run
with its model's costs from the profiles) -> `scoreboard` (one row per dataset × model: the variant with the best
validation F1, its test F1 over seeds, Δ to the teacher, costs) -> `leaderboard`, `cost_table`, `pareto_models`,
`answer`, `paper_claims` here, the figures in kdlib.plots and `recommend` in kdlib.recommend.
"""
from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from kdlib import published as kdpublished
from kdlib import rundir
from kdlib.data import DATASETS, get_spec
from kdlib.errors import KdExamError
from kdlib.params import STUDENTS
from kdlib.profile_tables import REFERENCE_NAME

COLUMNS = ["stage", "dataset", "model", "variant", "seed", "kd", "loss", "alpha", "temperature", "f1",
           "valid_f1", "teacher_f1", "parameters", "train_examples", "train_split_examples", "best_epoch",
           "resumed_from_epoch", "train_seconds", "wall_seconds", "finished", "run_dir", "shape", "epochs_run",
           "stopped_by", "max_length", "test_examples_cut", "test_words_cut", "pooling"]
EARLY_STOPPING, EPOCH_CAP = "early stopping", "epoch cap"  # what ended a run's training (stopped_by)


def collect(study_dir: str | os.PathLike, *, finished_only: bool = True, include: str | os.PathLike | None = None,
            model: str | None = None, columns: Sequence[str] = COLUMNS) -> pd.DataFrame:
    """One row per run (dataset × model × variant × seed) from every metrics.json under `study_dir`, the `columns`
    of `run_row` (kdlib.stats.ablation_runs asks for the ablation ones). `include`: a run folder read although
    unfinished (the run finishing now); `model`: that student's runs only."""
    include = Path(include).resolve() if include else None
    rows = []
    for path in sorted(Path(study_dir).rglob(rundir.METRICS)):
        finished = rundir.is_done(path.parent)
        if finished_only and not finished and not (include and path.parent.resolve() == include):
            continue
        if (m := rundir.read_or_skip(path)) is None:
            continue
        if model and m.get("model") != model:
            continue
        rows.append(run_row(m, path.parent, finished))
    return pd.DataFrame(rows, columns=list(columns))


def run_row(m: dict, run_dir: Path, finished: bool) -> dict:
    """What a table of runs may show of one metrics.json: the run, its scores, sizes and times, its embeddings and
    transfer set (the ablations')."""
    emb, transfer = m.get("embedding") or {}, m.get("transfer") or {}
    return {
        "stage": m.get("stage"), "dataset": m.get("dataset"), "model": m.get("model"),
        "variant": m.get("variant"), "seed": m.get("seed"), "kd": m.get("kd", False), "loss": m.get("loss"),
        "alpha": m.get("alpha"), "temperature": m.get("temperature"), "metric": m.get("metric"), "f1": m.get("f1"),
        "valid_f1": (m.get("valid") or {}).get("f1"), "teacher_f1": m.get("teacher_f1"),
        "parameters": m.get("parameters"), "train_examples": m.get("train_examples"),
        "train_split_examples": m.get("train_split_examples"), "resumed_from_epoch": m.get("resumed_from_epoch"),
        "best_epoch": m.get("best_epoch"), "train_seconds": m.get("train_seconds"),
        "wall_seconds": m.get("wall_seconds"), "finished": finished, "run_dir": str(run_dir),
        "shape": m.get("shape"),  # runs before your own datasets existed have none: IndoNLU's registry knows
        "pooling": m.get("pooling"),  # a teacher's head: what it reads (e.g. "words (tagging, first-content sub-word)")
        "embedding": emb.get("source"), "freeze_embeddings": emb.get("freeze"), "oov_rate": emb.get("oov_rate"),
        "test_token_oov": emb.get("test_token_oov"), "transfer": transfer.get("kind"),
        "transfer_size": transfer.get("size"),
        "transfer_examples": (transfer.get("train_examples") or 0) + (transfer.get("extra_examples") or 0),
        "epochs_run": len(m["history"]) if isinstance(m.get("history"), list) else None, "stopped_by": stopped_by(m),
        **truncated_columns(m),
    }


def truncated_columns(m: dict) -> dict:
    """A teacher's test split as its max_length leaves it (kdlib.teachers.truncation): the share of examples cut
    and, for tagging, of words never seen; None for runs that do not record it (students, older teachers)."""
    test = (m.get("truncated") or {}).get("test") or {}
    share = {cut: test[cut] / test[of] if test.get(of) else None
             for cut, of in (("examples_cut", "examples"), ("words_cut", "words"))}
    return {"max_length": m.get("max_length"), "test_examples_cut": share["examples_cut"],
            "test_words_cut": share["words_cut"]}


TRUNCATION_NOTE_SHARE = 0.01  # a teacher that cuts at least this share of test examples is named


def truncation_note(df: pd.DataFrame) -> str:
    """One line naming the teachers whose max_length cuts off at least 1% of test examples ("" when none does):
    the cut text is never seen by the teacher or the BERT students (which read its max_length), and a cut word
    of a tagging task is scored as the fallback label, so their F1 is lower than the model's."""
    if "test_examples_cut" not in df:
        return ""
    cut = df[(df["model"] == "teacher") & (pd.to_numeric(df["test_examples_cut"]) >= TRUNCATION_NOTE_SHARE)]
    if cut.empty:
        return ""
    parts = [f"{r['dataset']} {100 * r['test_examples_cut']:.1f}% of test examples at {int(r['max_length'])} "
             "sub-words" + (f" ({100 * r['test_words_cut']:.1f}% of its words unseen)"
                            if pd.notna(r.get("test_words_cut")) and r["test_words_cut"] > 0 else "")
             for _, r in cut.sort_values("dataset").iterrows()]
    return ("TRUNCATED inputs (the teacher and the BERT students never see the rest; a cut word is scored as "
            "the fallback label): " + "; ".join(parts) + ". Raise the teacher's `max_length` for them.")


def stopped_by(m: dict) -> str | None:
    """What ended a run's training: EARLY_STOPPING (validation F1 stopped improving for `patience` epochs) or
    EPOCH_CAP (its `epochs` ran out first: the score may be short of convergence, and a fair exam raises the cap);
    None when the run does not record its history and settings."""
    history, params = m.get("history"), m.get("params") or {}
    cap, patience, best = params.get("epochs"), params.get("patience"), m.get("best_epoch")
    if not isinstance(history, list) or not history or not cap or patience is None or best is None:
        return None
    ran = len(history)
    return EARLY_STOPPING if ran < cap or ran - best >= patience else EPOCH_CAP


def scores_table(metrics: dict) -> pd.DataFrame:
    """Valid and test scores of one run, as percentages."""
    rows = {split: {k: 100 * v for k, v in metrics[split].items()} for split in ("valid", "test") if split in metrics}
    return pd.DataFrame(rows).T.round(2)


def comparison(runs: Sequence[dict | None]) -> pd.DataFrame:
    """Teacher, distilled student and student without KD side by side; Δ is test F1 minus the teacher's."""
    rows = []
    for m in runs:
        if not m:
            continue
        training = "KD " + m["variant"] if m.get("kd") else "no KD"
        label = "teacher" if m["stage"] == "teacher" else f"{m['model']} ({training})"
        rows.append({"model": label, "test F1": 100 * m["f1"], "valid F1": 100 * m["valid"]["f1"],
                     "parameters (M)": m["parameters"] / 1e6, "train examples": m["train_examples"],
                     "train s": m["train_seconds"]})
    df = pd.DataFrame(rows)
    teacher = df.loc[df["model"] == "teacher", "test F1"]
    if not teacher.empty:
        df["Δ to teacher"] = df["test F1"] - teacher.iloc[0]
    return df.round(2)


def read_metrics(run_dir: str | os.PathLike | None) -> dict | None:
    """A run's metrics.json, or None when the folder is empty or unfinished."""
    if not run_dir:
        return None
    path = Path(run_dir) / rundir.METRICS
    return rundir.read_json(path) if path.exists() else None


def summary(df: pd.DataFrame) -> pd.DataFrame:
    """Test F1 (%) per dataset: the teacher and every student/variant, mean over seeds (± sd when several)."""
    if df.empty:
        return df
    df = df.assign(column=df.apply(lambda r: "teacher" if r["stage"] == "teacher" else
                                   f"{r['model']} {'KD' if r['kd'] else 'no-KD'}" if r["variant"] in ("mse", "no-kd")
                                   else f"{r['model']} {r['variant']}", axis=1))
    grouped = df.groupby(["dataset", "column"])["f1"]
    mean, sd, n = grouped.mean() * 100, grouped.std() * 100, grouped.count()
    text = mean.round(2).astype(str).where(n < 2, mean.round(2).astype(str) + " ± " + sd.round(2).astype(str))
    table = text.unstack("column")
    order = ["teacher"] + sorted(c for c in table.columns if c != "teacher")
    return table[[c for c in order if c in table.columns]]


def run_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per run: what it was, its test F1 (%), its best epoch and how long it took (training: every epoch,
    across resumes; wall: the last attempt, marked when the run resumed after an interrupt)."""
    cols = ["dataset", "model", "variant", "seed", "train_examples", "best_epoch"]
    cols += [c for c in ("epochs_run", "stopped_by") if c in df]  # runs.csv of older publishes: neither
    # runs from before resumed_from_epoch was recorded: training time above wall time means earlier attempts
    df = df.assign(**{c: pd.to_numeric(df[c]) for c in ("train_seconds", "wall_seconds", "resumed_from_epoch")})
    resumed = (df["resumed_from_epoch"].fillna(0) > 0) | (df["train_seconds"] > df["wall_seconds"])
    out = df[cols].assign(**{"test F1": (100 * df["f1"]).round(2), "train s": df["train_seconds"].round(0),
                             "wall s": df["wall_seconds"].round(0).astype("Int64").astype(str)
                             .where(~resumed, lambda w: w + " (resumed)")})
    order = {m: i for i, m in enumerate(model_order(df["model"].unique()))}
    return out.sort_values(["dataset", "model", "variant", "seed"], key=lambda c: c.map(order) if c.name == "model"
                           else c).reset_index(drop=True)


def epoch_cap_note(df: pd.DataFrame) -> str:
    """One line naming the runs whose epoch cap, not early stopping, ended their training ("" when none did)."""
    if "stopped_by" not in df:
        return ""
    cut = df[df["stopped_by"] == EPOCH_CAP]
    if cut.empty:
        return ""
    parts = [f"{r['dataset']} {r['model']}" + ("" if r["model"] == "teacher" else f" {r['variant']} s{r['seed']}")
             + f" (best epoch {int(r['best_epoch'])} of {int(r['epochs_run'])})" for _, r in cut.iterrows()]
    return ("STOPPED BY THE EPOCH CAP, not by early stopping (validation F1 was still rising or had not plateaued "
            "for `patience` epochs): " + "; ".join(parts) + ". Their scores may be short of convergence; raise "
            "`epochs` for them.")


def capped_note(df: pd.DataFrame) -> str:
    """One line naming the runs that trained on a capped train split ("" when none did): their scores are not the
    exam's, and a reader of the table must be told."""
    known = df.dropna(subset=["train_examples", "train_split_examples"])
    capped = known[known["train_examples"] < known["train_split_examples"]]
    if capped.empty:
        return ""
    parts = [f"{dataset} {'teacher' if model == 'teacher' else model} {int(g['train_examples'].min()):,} of "
             f"{int(g['train_split_examples'].iloc[0]):,}" for (dataset, model), g in
             capped.groupby(["dataset", "model"], sort=True)]
    return ("CAPPED train sets (a fixed random subset of the split, for speed): " + "; ".join(parts)
            + ". Their scores are not those of the full training sets.")


# ----------------------------------------------------------------------------------------------------------------
# The study as one frame: quality from every metrics.json, cost from every profile.json (kdlib.profile).

GROUPS = {"single": "classification", "pair": "classification", "aspect": "classification", "tagging": "tagging",
          "qa": "tagging"}
QUALITY_STAGES = ("teacher", "distill")  # ablation stages answer other questions (see kdlib.stats)
ENGINE_COLUMNS = {"torch": ("size_mb", "ram_mb"), "onnx": ("onnx_mb", "onnx_ram_mb"),  # size and RAM per engine
                  "int8": ("int8_mb", "int8_ram_mb")}
MODEL_COLUMNS = ["dataset", "model", "parameters", "size_mb", "onnx_mb", "int8_mb", "ram_mb", "onnx_ram_mb",
                 "int8_ram_mb", "f1_torch", "f1_onnx", "f1_int8", "onnx_max_abs_diff", "onnx_match", "cpu",
                 "profile_dir"]
LATENCY_COLUMNS = ["dataset", "model", "engine", "threads", "batch", "inputs", "median_ms", "p25_ms", "p75_ms",
                   "p90_ms", "mean_ms",
                   "examples_per_s", "runs", "mean_width"]


def _profiles(study_dir: str | os.PathLike, published_dir: str | os.PathLike | None = None) -> list[tuple[Path, dict]]:
    """Every profile.json under the study, and the published profile (kdlib.published) of each dataset neither
    profiled nor with its teacher trained again here."""
    read = [(path.parent, rundir.read_or_skip(path)) for path in sorted(Path(study_dir).rglob(rundir.PROFILE))]
    here = [(folder, prof) for folder, prof in read if prof is not None]
    mine = {prof["dataset"] for _, prof in here} | kdpublished.retrained(study_dir, published_dir)
    return here + [found for dataset, found in kdpublished.profiles(published_dir).items() if dataset not in mine]


def profile_models(study_dir: str | os.PathLike, published_dir: str | os.PathLike | None = None) -> pd.DataFrame:
    """One row per dataset × profiled model: parameters, MB on disk and in RAM per engine, F1 per engine."""
    rows = []
    for folder, prof in _profiles(study_dir, published_dir):
        for m in prof["models"]:
            memory = m.get("memory") or {}
            mb = lambda key, m=m: m[key] / 2**20 if m.get(key) is not None else None  # noqa: E731
            rows.append({"dataset": prof["dataset"], "model": m["model"], "parameters": m["parameters"],
                         "size_mb": mb("safetensors_bytes"), "onnx_mb": mb("onnx_bytes"), "int8_mb": mb("int8_bytes"),
                         **{f"{prefix}ram_mb": _ram(memory.get(engine))
                            for engine, prefix in (("torch", ""), ("onnx", "onnx_"), ("int8", "int8_"))},
                         "f1_torch": m.get("f1_torch"), "f1_onnx": m.get("f1_onnx"), "f1_int8": m.get("f1_int8"),
                         "onnx_max_abs_diff": m.get("onnx_max_abs_diff"), "onnx_match": m.get("onnx_match"),
                         "cpu": prof["machine"].get("cpu"), "profile_dir": str(folder)})
    return pd.DataFrame(rows, columns=MODEL_COLUMNS)


def _ram(memory: dict | None) -> float | None:
    """A model's RAM for budgets: with every weight resident (a long-running server's worst case)."""
    memory = memory or {}
    return memory.get("resident_mb", memory.get("model_mb"))


def profile_latency(study_dir: str | os.PathLike, published_dir: str | os.PathLike | None = None) -> pd.DataFrame:
    """Every latency measurement of a study: one row per dataset × model × engine × threads × batch × inputs."""
    rows = [{"dataset": prof["dataset"], **row} for _, prof in _profiles(study_dir, published_dir)
            for row in prof["latency"]]
    return pd.DataFrame(rows).reindex(columns=LATENCY_COLUMNS)


def costs(study_dir: str | os.PathLike, *, threads: int = 1, inputs: str = "real",
          published: str | os.PathLike | None = None) -> pd.DataFrame:
    """One row per dataset × model: sizes, RAM, F1 per engine and `<engine>_ms_b<batch>` median latencies.

    `threads` picks the thread count of the latencies (0: the largest one profiled, i.e. all cores); `published`: a
    published folder whose profiles count for the datasets not profiled here (kdlib.published).
    """
    models, latency = profile_models(study_dir, published), profile_latency(study_dir, published)
    if models.empty:
        raise KdExamError(f"no {rundir.PROFILE} under {study_dir}; profile the study first (notebooks/06_profile, or "
                          "`kdexam profile --study ... --dataset ...`).")
    threads = int(latency["threads"].max()) if threads == 0 else threads
    chosen = latency[(latency["threads"] == threads) & (latency["inputs"] == inputs)]
    if chosen.empty:
        raise KdExamError(f"the profiles under {study_dir} have no latency at threads={threads}, inputs={inputs!r}; "
                          f"they have threads {sorted(latency['threads'].unique().tolist())} and inputs "
                          f"{sorted(latency['inputs'].unique().tolist())}.")
    spread = [c for c in ("p25_ms", "p75_ms") if c in chosen and chosen[c].notna().any()]  # older profiles: none
    wide = chosen.pivot_table(index=["dataset", "model"], columns=["engine", "batch"],
                              values=["median_ms", *spread])
    wide.columns = [f"{engine}_ms_b{batch}" + ("" if value == "median_ms" else f"_{value[:3]}")
                    for value, engine, batch in wide.columns]
    out = models.merge(wide.reset_index(), on=["dataset", "model"], how="left")
    out["threads"], out["inputs"] = threads, inputs
    return out


def group_of(dataset: str, shape: str | None = None) -> str:
    """The task group of a dataset: "classification" (single, pair, aspect) or "tagging" (tagging, QA); `shape`
    (from the run's metrics.json) for your own datasets, which the registry does not know."""
    return GROUPS[shape if isinstance(shape, str) else get_spec(dataset).shape]


def study_frame(study_dir: str | os.PathLike, *, threads: int = 1, inputs: str = "real",
                published: str | os.PathLike | None = None, profiled_only: bool = False) -> pd.DataFrame:
    """Every finished teacher/distill run (one row per dataset × model × variant × seed) with its model's costs.

    `published`: a study's published folder (kdlib.published; default: study_dir itself when it is one, e.g.
    reports/<study>): its rows and profiles count for the runs and datasets not on this machine. Cost columns are
    empty for datasets without a profile yet. `profiled_only` (the analysis, the published tables): once some
    datasets are profiled, a dataset that is not (its runs still going: a profile runs after all of a dataset's
    students) is left out, so an interim analysis averages over finished datasets only; `frame.attrs["in_progress"]`
    names them.
    """
    published = published or kdpublished.default_folder(study_dir)
    runs = collect(study_dir)
    if len(elsewhere := kdpublished.absent_rows(runs, study_dir, published)):
        runs = pd.concat([elsewhere, runs], ignore_index=True).infer_objects()
    runs = runs[runs["stage"].isin(QUALITY_STAGES)]
    if runs.empty:
        raise KdExamError(f"no finished teacher or student run under {study_dir}"
                          f"{' or in ' + str(published) if published else ''}; run the study with `kdexam run`.")
    try:
        cost = costs(study_dir, threads=threads, inputs=inputs, published=published)
    except KdExamError:
        if _profiles(study_dir, published):
            raise
        cost = pd.DataFrame(columns=["dataset", "model"])
    in_progress = sorted(set(runs["dataset"]) - set(cost["dataset"])) if profiled_only and len(cost) else []
    runs = runs[~runs["dataset"].isin(in_progress)]
    frame = runs.merge(cost.drop(columns=["parameters"], errors="ignore"), on=["dataset", "model"], how="left")
    frame = frame.merge(reference_costs(cost), on="dataset", how="left")
    groups = [group_of(d, s) for d, s in zip(frame["dataset"], frame["shape"])]
    frame = frame.assign(group=groups).reset_index(drop=True)
    frame.attrs["in_progress"] = in_progress
    return frame


def in_progress_note(frame: pd.DataFrame) -> str:
    """One line naming the datasets study_frame left out (not profiled yet), or ''."""
    pending = frame.attrs.get("in_progress") or []
    return (f"Left out until their runs and profile finish: {', '.join(pending)} (an interim analysis counts finished "
            "datasets only)." if pending else "")


REFERENCE_SUFFIX = REFERENCE_NAME.format("")  # " (timing only)": the profile's BERT-base-shaped reference model


def reference_costs(cost: pd.DataFrame) -> pd.DataFrame:
    """Per dataset, the timing-only reference model's PyTorch medians (`ref_ms_b<batch>`) and size (`ref_size_mb`),
    from the same profile runs as its dataset's models: the paper's teacher is BERT-base, larger than ours, so
    speed-ups and size shares are given against it too. Empty where no profile timed a reference."""
    ref = cost[cost["model"].astype(str).str.endswith(REFERENCE_SUFFIX)] if "model" in cost else cost
    columns = {c: "ref_" + c.removeprefix("torch_") for c in ref.columns
               if re.fullmatch(r"torch_ms_b\d+", str(c))} | {"size_mb": "ref_size_mb"}
    if ref.empty:
        return pd.DataFrame(columns=["dataset", *columns.values()])
    return ref.drop_duplicates("dataset")[["dataset", *[c for c in columns if c in ref]]].rename(columns=columns)


def model_order(models: Sequence[str]) -> list[str]:
    known = ["teacher", *STUDENTS]
    return sorted(models, key=lambda m: (known.index(m) if m in known else len(known), m))


def scoreboard(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per dataset × model, in F1 percentage points: its variant with the best validation F1 (mean over
    seeds; choosing on test would flatter it), test F1 mean, sd and seed count, Δ to the teacher, and its costs."""
    cost_cols = [c for c in frame.columns if c not in COLUMNS and c not in ("group",)]
    agg = frame.groupby(["dataset", "model", "variant"], as_index=False, dropna=False).agg(
        f1=("f1", "mean"), f1_sd=("f1", "std"), seeds=("f1", "count"), valid_f1=("valid_f1", "mean"),
        parameters=("parameters", "first"), **{c: (c, "first") for c in cost_cols})
    best = agg.sort_values(["valid_f1", "f1"], ascending=False).drop_duplicates(["dataset", "model"])
    best[["f1", "f1_sd", "valid_f1"]] = best[["f1", "f1_sd", "valid_f1"]] * 100
    for col in ("f1_torch", "f1_onnx", "f1_int8"):
        if col in best:
            best[col] = best[col].astype(float) * 100
    teacher = best[best["model"] == "teacher"].set_index("dataset")["f1"]
    best["teacher_f1"] = best["dataset"].map(teacher)
    best["delta"] = best["f1"] - best["teacher_f1"]
    best["group"] = best["dataset"].map(dict(zip(frame["dataset"], frame["group"])) if "group" in frame
                                        else group_of)
    order = {d: i for i, d in enumerate(DATASETS)}
    models = {m: i for i, m in enumerate(model_order(best["model"].unique()))}
    best = best.sort_values(["dataset", "model"], key=lambda s: s.map(order if s.name == "dataset" else models))
    return best.reset_index(drop=True)


def leaderboard(board: pd.DataFrame) -> pd.DataFrame:
    """Test F1 (%) per dataset × model with its seeds' spread and Δ to the teacher, for display."""
    out = board.set_index(["dataset", "model"])
    spread = out.apply(lambda r: f"{r['f1']:.2f} ± {r['f1_sd']:.2f}" if r["seeds"] > 1 else f"{r['f1']:.2f}",
                       axis=1)
    return pd.DataFrame({"variant": out["variant"], "test F1": spread, "seeds": out["seeds"],
                         "Δ to teacher": out["delta"].round(2), "valid F1": out["valid_f1"].round(2)})


def batches(board: pd.DataFrame, engine: str = "torch") -> list[int]:
    """The batch sizes of `engine`'s median latency columns of a scoreboard."""
    pattern = re.compile(rf"{engine}_ms_b(\d+)")  # medians only: torch_ms_b1, not its spread torch_ms_b1_p25
    return sorted(int(m.group(1)) for c in board.columns if (m := pattern.fullmatch(str(c))))


def cost_table(board: pd.DataFrame) -> pd.DataFrame:
    """Each model's cost against its dataset's teacher: speed-ups (×, teacher ms / model ms, PyTorch on both, or the
    model's ONNX / int8 against the teacher's PyTorch), % of the teacher's size and RAM, and what ONNX and int8 give
    the model itself (× over its own PyTorch, int8 size and F1 change against its fp32 ONNX). Where the profile
    timed a BERT-base-shaped reference (the paper's teacher's shape, random weights), speed-ups and the size share
    against it too (`× BERT-base b<batch>`, `ONNX × BERT-base b<batch>`, `% of BERT-base size`)."""
    rows = []
    for dataset, d in board.groupby("dataset", sort=False):
        t = d[d["model"] == "teacher"]
        if t.empty:
            continue
        t = t.iloc[0]
        for _, r in d.iterrows():
            row = {"dataset": dataset, "model": r["model"], "params (M)": r["parameters"] / 1e6,
                   "size MB": r.get("size_mb"), "% of teacher size": 100 * _ratio(r.get("size_mb"), t.get("size_mb")),
                   "RAM MB": r.get("ram_mb"), "% of teacher RAM": 100 * _ratio(r.get("ram_mb"), t.get("ram_mb"))}
            for b in batches(board):
                row[f"ms b{b}"] = r.get(f"torch_ms_b{b}")
                row[f"× b{b}"] = _ratio(t.get(f"torch_ms_b{b}"), r.get(f"torch_ms_b{b}"))
                for engine, label in (("onnx", "ONNX"), ("int8", "int8")):
                    row[f"{label} × b{b}"] = _ratio(t.get(f"torch_ms_b{b}"), r.get(f"{engine}_ms_b{b}"))
                row[f"ONNX gain b{b}"] = _ratio(r.get(f"torch_ms_b{b}"), r.get(f"onnx_ms_b{b}"))
                row[f"int8 gain b{b}"] = _ratio(r.get(f"onnx_ms_b{b}"), r.get(f"int8_ms_b{b}"))
            row["int8 MB"] = r.get("int8_mb")
            row["int8 ΔF1"] = _diff(r.get("f1_int8"), r.get("f1_onnx"))
            if "ref_size_mb" in board and board["ref_size_mb"].notna().any():  # against a BERT-base-shaped model
                for b in batches(board):
                    row[f"× BERT-base b{b}"] = _ratio(r.get(f"ref_ms_b{b}"), r.get(f"torch_ms_b{b}"))
                    row[f"ONNX × BERT-base b{b}"] = _ratio(r.get(f"ref_ms_b{b}"), r.get(f"onnx_ms_b{b}"))
                row["% of BERT-base size"] = 100 * _ratio(r.get("size_mb"), r.get("ref_size_mb"))
            rows.append(row)
    return pd.DataFrame(rows).set_index(["dataset", "model"]).astype(float).round(2)


SHAPE_WORDS = {"single": "single sentence", "pair": "sentence pair", "aspect": "multi-aspect", "tagging": "tagging",
               "qa": "QA as span tagging"}


def headline(frame: pd.DataFrame, costs: pd.DataFrame | None = None) -> pd.DataFrame:
    """The exam in one table, for a reader who reads nothing else: per dataset (its task shape, and its train cap
    if any), the teacher's and each student's test F1 (%, mean ± sd over seeds; a student's best KD variant on
    validation F1: its no-KD runs are in kdlib.publish.kd_table), the best student; then the classification and
    tagging averages (over the group's datasets that every model has); then, from `costs` (cost_table, reset to
    columns; batch 1, one thread), the median over profiled datasets of the speed-up over our teacher (its ONNX one
    in brackets), over the BERT-base-shaped timing model, and the size as % of our teacher. Strings, to print."""
    quality = frame[frame["stage"].isin(QUALITY_STAGES)]
    quality = quality[(quality["stage"] == "teacher") | (quality["variant"] != "no-kd")]
    if quality.empty:
        return pd.DataFrame()
    per_variant = quality.groupby(["dataset", "model", "variant"], as_index=False).agg(
        f1=("f1", "mean"), sd=("f1", "std"), seeds=("f1", "count"), valid=("valid_f1", "mean"),
        shape=("shape", "first"), used=("train_examples", "min"), split=("train_split_examples", "max"))
    best = per_variant.sort_values(["valid", "f1"], ascending=False, na_position="last").drop_duplicates(
        ["dataset", "model"])
    models = model_order(best["model"].unique())
    students = [m for m in models if m != "teacher"]
    order = {d: i for i, d in enumerate(DATASETS)}
    datasets = sorted(best["dataset"].unique(), key=lambda d: (order.get(d, len(order)), d))
    cell = best.set_index(["dataset", "model"])
    rows, groups = [], {}
    for d in datasets:
        here = cell.loc[d]
        shape = next((s for s in here["shape"] if isinstance(s, str)), DATASETS[d].shape if d in DATASETS else None)
        teacher = here.loc["teacher"] if "teacher" in here.index else None
        label = _dataset_label(d, shape, teacher)
        row = {"dataset": label}
        for m in models:
            if m in here.index:
                r = here.loc[m]
                row[m] = f"{100 * r['f1']:.2f}" + (f" ± {100 * r['sd']:.2f}" if r["seeds"] > 1 else "")
        scores = here.loc[[m for m in students if m in here.index], "f1"]
        row["best student"] = scores.idxmax() if len(scores) else ""
        rows.append(row)
        groups.setdefault(group_of(d, shape), []).append(d)
    for group in ("classification", "tagging"):
        members = groups.get(group, [])
        if not (complete := [d for d in members if all((d, m) in cell.index for m in models)]):
            continue  # averages over the same datasets for every model, or they would not compare
        row = {"dataset": f"{group} average ({len(complete)}"
                          + (f" of {len(members)}, those every model has)" if len(complete) < len(members) else ")")}
        means = {}
        for m in models:
            mean = float(np.mean([cell.loc[(d, m), "f1"] for d in complete]))
            row[m], means[m] = f"{100 * mean:.2f}", mean
        students_here = {m: v for m, v in means.items() if m != "teacher"}
        row["best student"] = max(students_here, key=students_here.get) if students_here else ""
        rows.append(row)
    if costs is not None and not costs.empty:
        rows.extend(_headline_costs(costs, models))
    return pd.DataFrame(rows, columns=["dataset", *models, "best student"]).fillna("")


def _dataset_label(dataset: str, shape: str | None, teacher) -> str:
    spec = DATASETS.get(dataset)
    label = f"{spec.name if spec else dataset} ({SHAPE_WORDS.get(shape, shape or '?')}"
    if teacher is not None and teacher["used"] < teacher["split"]:
        label += f", train capped at {int(teacher['used']):,} of {int(teacher['split']):,}"
    return label + ")"


def _headline_costs(costs: pd.DataFrame, models: Sequence[str]) -> list[dict]:
    """The cost rows of the headline: medians over the profiled datasets, batch 1."""
    n = costs["dataset"].nunique()
    by_model = costs.groupby("model")

    def median(model: str, column: str) -> float:
        return float(by_model.get_group(model)[column].median()) if column in costs and model in by_model.groups \
            else float("nan")

    speed = {"dataset": f"speed-up over our teacher, batch 1 (ONNX), median of {n}"}
    reference = {"dataset": f"speed-up over a BERT-base-shaped model, median of {n}"}
    size = {"dataset": f"size, % of our teacher, median of {n}"}
    for m in models:
        if not pd.isna(x := median(m, "× b1")):
            onnx = median(m, "ONNX × b1")
            speed[m] = f"{x:.1f}×" + ("" if pd.isna(onnx) else f" ({onnx:.1f}×)")
        if m != "teacher" and not pd.isna(x := median(m, "× BERT-base b1")):
            reference[m] = f"{x:.1f}×"
        if not pd.isna(x := median(m, "% of teacher size")):
            size[m] = f"{x:.1f}%"
    return [r for r in (speed, reference, size) if len(r) > 1]


def _ratio(a, b) -> float:
    try:
        return float(a) / float(b) if b and not pd.isna(a) and not pd.isna(b) else float("nan")
    except (TypeError, ValueError):
        return float("nan")


def _diff(a, b) -> float:
    missing = a is None or b is None or pd.isna(a) or pd.isna(b)
    return float("nan") if missing else float(a) - float(b)


# ----------------------------------------------------------------------------------------------------------------
# Pareto frontiers and the heatmap

COSTS = {"latency": ("torch_ms_b1", "latency, batch 1"), "size": ("size_mb", "size on disk"),
         "ram": ("ram_mb", "RAM")}


def pareto_front(cost: Sequence[float], quality: Sequence[float]) -> list[bool]:
    """True where no other point is at most as costly and at least as good, and strictly better in one."""
    c, q = pd.Series(cost, dtype=float).to_numpy(), pd.Series(quality, dtype=float).to_numpy()
    return [not (((c <= c[i]) & (q >= q[i]) & ((c < c[i]) | (q > q[i]))).any()) for i in range(len(c))]


def relative_costs(board: pd.DataFrame, column: str) -> pd.Series:
    """`column` as % of the same dataset's teacher value."""
    teacher = board[board["model"] == "teacher"].set_index("dataset")[column]
    return 100 * board[column].astype(float) / board["dataset"].map(teacher).astype(float)


def pareto_models(board: pd.DataFrame, cost: str = "latency") -> pd.DataFrame:
    """Per task group and model: mean Δ to the teacher, geometric-mean cost (% of the teacher) and whether the
    model is on the group's Pareto frontier of those two."""
    column = COSTS[cost][0] if cost in COSTS else cost
    df = board.assign(rel=relative_costs(board, column)).dropna(subset=["rel", "delta"])
    rows = []
    for group, g in df.groupby("group"):
        means = g.groupby("model").agg(delta=("delta", "mean"), rel=("rel", lambda s: float(np.exp(np.log(s).mean()))),
                                       datasets=("dataset", "nunique")).reset_index()
        means["pareto"] = pareto_front(means["rel"], means["delta"])
        rows.append(means.assign(group=group))
    out = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=["group", "model", "delta", "rel"])
    return out.rename(columns={"rel": f"% of teacher {cost}"})


def save_table(df: pd.DataFrame, out_dir: str | os.PathLike, name: str) -> Path:
    """The table as out_dir/tables/<name>.csv."""
    path = Path(out_dir) / "tables" / f"{name}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(path)
    return path


# ----------------------------------------------------------------------------------------------------------------
# The answer: which student, per dataset and task group, written from the numbers

def _pm(r) -> str:
    return f"{r['f1']:.1f} ± {r['f1_sd']:.1f}" if r["seeds"] > 1 else f"{r['f1']:.1f}"


def pick_students(board: pd.DataFrame, tolerance: float = 1.0, cost: str = "latency") -> pd.DataFrame:
    """Per dataset: the best student by test F1, and the pick: the cheapest student whose F1 is within
    max(`tolerance` points, the best student's seed sd) of the best. Cost: batch-1 latency (or size, RAM)."""
    column = COSTS[cost][0]
    rows = []
    for dataset, d in board[(board["model"] != "teacher") & board["f1"].notna()].groupby("dataset", sort=False):
        best = d.loc[d["f1"].idxmax()]
        margin = max(tolerance, 0.0 if pd.isna(best["f1_sd"]) else float(best["f1_sd"]))
        close = d[d["f1"] >= best["f1"] - margin]
        has_cost = column in close and close[column].notna().any()
        pick = close.loc[close[column].astype(float).idxmin()] if has_cost else best
        rows.append({"dataset": dataset, "group": best["group"], "best": best["model"], "best_f1": best["f1"],
                     "pick": pick["model"], "pick_f1": pick["f1"], "pick_delta": pick["delta"], "margin": margin,
                     "teacher_f1": best["teacher_f1"]})
    return pd.DataFrame(rows)


def answer(board: pd.DataFrame, tolerance: float = 1.0) -> str:
    """"Which student is best": a Markdown paragraph per task group and a line per dataset, from the numbers."""
    picks = pick_students(board, tolerance)
    if picks.empty:
        return "No student has finished yet: nothing to compare."
    rows = board.set_index(["dataset", "model"])
    single_seed = bool((board["seeds"] <= 1).all())
    threads = board["threads"].dropna() if "threads" in board else pd.Series(dtype=float)
    lines = [f"**Rule.** Per dataset, the pick is the fastest student (PyTorch, batch 1, "
             f"{int(threads.iloc[0]) if len(threads) else '?'} thread(s)) whose test F1 is within max({tolerance:g} "
             "point, the best student's seed sd) of the best student's; the best is the highest test F1 regardless of "
             "cost. Variants are chosen on validation F1."]
    if single_seed:
        lines.append("*Every score rests on one seed, so no spread is shown: differences of about a point are not "
                     "evidence either way; run more seeds to tell them apart.*")
    for group, g in picks.groupby("group", sort=False):
        counts = g["pick"].value_counts()
        top = counts.index[0]
        mine = board[(board["model"] == top) & board["dataset"].isin(g["dataset"])]
        speed = _ratio_text(board, mine, "torch_ms_b1", "")
        size = _ratio_text(board, mine, "size_mb", "of the size", inverse=True)
        lines.append(f"\n### {group.capitalize()}\n**{top}** is the pick on {counts.iloc[0]} of {len(g)} dataset(s): "
                     f"Δ to the teacher {mine['delta'].mean():+.1f} points on average{speed}{size}. "
                     f"Best F1 regardless of cost: " + ", ".join(f"{m} on {n}" for m, n in
                                                                    g["best"].value_counts().items()) + ".")
        for _, p in g.iterrows():
            pick, best = rows.loc[(p["dataset"], p["pick"])], rows.loc[(p["dataset"], p["best"])]
            cost = ""
            if pd.notna(pick.get("torch_ms_b1")):
                t = rows.loc[(p["dataset"], "teacher")] if (p["dataset"], "teacher") in rows.index else None
                cost = f", {pick['torch_ms_b1']:.2f} ms per example at batch 1"
                if t is not None and pd.notna(t.get("torch_ms_b1")):
                    cost += (f" ({_times(_ratio(t['torch_ms_b1'], pick['torch_ms_b1']))} the teacher's speed, "
                             f"{100 * _ratio(pick['size_mb'], t['size_mb']):.0f}% of its size)")
            same = p["pick"] == p["best"]
            lines.append(f"- **{p['dataset']}** (teacher {p['teacher_f1']:.1f}): pick **{p['pick']}** "
                         f"{_pm(pick)} ({pick['variant']}, Δ {pick['delta']:+.1f}){cost}"
                         + ("; it is also the best." if same else
                            f"; best {p['best']} {_pm(best)} is within {p['margin']:.1f} points."))
    return "\n".join(lines)


def _times(x: float) -> str:
    return f"{x:.0f}×" if x >= 10 else f"{x:.1f}×"


def _ratio_text(board: pd.DataFrame, mine: pd.DataFrame, column: str, word: str, inverse: bool = False) -> str:
    if column not in board or mine[column].isna().all():
        return ""
    teacher = board[board["model"] == "teacher"].set_index("dataset")[column]
    ratios = mine["dataset"].map(teacher).astype(float) / mine[column].astype(float)
    ratios = ratios.replace([np.inf, -np.inf], np.nan).dropna()
    if ratios.empty:
        return ""
    median = float(ratios.median())
    return f", {100 / median:.0f}% {word}" if inverse else f", {_times(median)} the teacher's speed (median)"


# ----------------------------------------------------------------------------------------------------------------
# The paper's headline claims, checked on a study's numbers

WORD_STUDENTS = tuple(name for name, s in STUDENTS.items() if s.kind == "word")  # BiLSTM, CNN
BERT_STUDENTS = tuple(name for name, s in STUDENTS.items() if s.kind == "subword")  # the BERT students


def paper_claims(board: pd.DataFrame) -> pd.DataFrame:
    """Nityasya et al.'s abstract, claim by claim, against this study's scoreboard (medians over datasets for the
    ratios, the mean for the F1 gap): what the paper says, what we measured, and on how many datasets."""
    rows = board.set_index(["dataset", "model"])
    datasets = [d for d in dict.fromkeys(board["dataset"])
                if (d, "teacher") in rows.index and (d, "bilstm") in rows.index]
    if not datasets:
        return pd.DataFrame(columns=["claim", "paper", "ours", "datasets"])
    pairs = [(rows.loc[(d, "bilstm")], rows.loc[(d, "teacher")]) for d in datasets]

    def median(values) -> float:
        values = [v for v in values if pd.notna(v)]
        return float(pd.Series(values).median()) if values else float("nan")

    gap = [b["delta"] for b, _ in pairs]
    out = [{"claim": "the best BiLSTM's test F1 minus its teacher's (mean)", "paper": "about -3 to -4",
            "ours": f"{pd.Series(gap).mean():+.2f} (from {min(gap):+.1f} to {max(gap):+.1f})",
            "datasets": len(datasets)}]

    def ratio_row(label: str, paper: str, values: list[float], percent: bool = False) -> dict:
        known = [v for v in values if pd.notna(v)]
        value = median(known)
        text = "not profiled" if not known else f"{100 * value:.1f}%" if percent else f"{value:.1f}x"
        return {"claim": label, "paper": paper, "ours": text, "datasets": len(known)}

    # against our teacher, then against the BERT-base-shaped reference the same profile runs timed (the paper's
    # teacher is BERT-base); rows for the reference only where a profile timed one
    against = [("the teacher", "the teacher's", "torch_ms_b1", "size_mb", pairs)]
    if "ref_size_mb" in board and board["ref_size_mb"].notna().any():
        against.append(("a BERT-base-shaped model (timing only)", "a BERT-base-shaped model's", "ref_ms_b1",
                        "ref_size_mb", [(b, b) for b, _ in pairs]))  # the reference's columns are on each row
    for name, owner, ms, size, rows_ in against:
        out.append(ratio_row(f"BiLSTM speed-up over {name}, CPU, batch 1 (median)", "about 22x",
                             [_ratio(t.get(ms), b.get("torch_ms_b1")) for b, t in rows_]))
        out.append(ratio_row(f"BiLSTM (ONNX) speed-up over {name} (PyTorch), batch 1 (median)", "about 100x",
                             [_ratio(t.get(ms), b.get("onnx_ms_b1")) for b, t in rows_]))
        out.append(ratio_row(f"BiLSTM size as a share of {owner} (median)", "about 3%",
                             [_ratio(b.get("size_mb"), t.get(size)) for b, t in rows_], percent=True))
    for column, name in COSTS.values():
        undominated = _word_students_undominated(board, column)
        out.append({"claim": f"a word student (BiLSTM/CNN) is not beaten by any BERT student at once on F1 and {name}",
                    "paper": "BiLSTM/CNN give the best quality per unit of cost",
                    "ours": f"{sum(undominated.values())} of {len(undominated)} datasets",
                    "datasets": len(undominated)})
    return pd.DataFrame(out)


def _word_students_undominated(board: pd.DataFrame, column: str) -> dict[str, bool]:
    """Per dataset: does its best word student stand undominated by every BERT student (none has F1 at least as
    high and cost at most as low, one of them strictly)?"""
    out = {}
    if column not in board:
        return out
    for dataset, d in board.groupby("dataset", sort=False):
        words = d[d["model"].isin(WORD_STUDENTS)].dropna(subset=["f1", column])
        berts = d[d["model"].isin(BERT_STUDENTS)].dropna(subset=["f1", column])
        if words.empty or berts.empty:
            continue
        w = words.loc[words["f1"].idxmax()]
        out[dataset] = not any((b["f1"] >= w["f1"] and b[column] <= w[column]) and
                               (b["f1"] > w["f1"] or b[column] < w[column]) for _, b in berts.iterrows())
    return out

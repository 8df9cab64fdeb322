"""The one exception type a user sees: the CLI prints its message on one line and exits non-zero."""
from __future__ import annotations

import difflib
import functools
import sys
from collections.abc import Iterable
from pathlib import Path


class KdExamError(Exception):
    """Bad input: the message says what is wrong, where, and how to fix it."""


class DataError(KdExamError):
    """A missing, malformed or inconsistent dataset file."""


class ConfigError(KdExamError):
    """A parameter file or argument that does not validate."""


class RunFolderError(KdExamError):
    """A file of a run folder that cannot be read (truncated, corrupt, or not written by kd-exam)."""


def unknown_name(kind: str, name: str, known: Iterable[str]) -> KdExamError:
    """An error for a name missing from a registry, suggesting the closest known names."""
    known = sorted(known)
    close = difflib.get_close_matches(name.lower(), known, n=3, cutoff=0.5)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return ConfigError(f"unknown {kind} {name!r}.{hint} Known: {', '.join(known)}.")


def one_line_errors(main):
    """A script's main() whose bad input ends it with the message on one line and exit status 1, like `kdexam`'s,
    not a traceback (benchmarks/ and other scripts beside the CLI)."""
    @functools.wraps(main)
    def wrapped(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except KdExamError as e:
            raise SystemExit(f"{Path(sys.argv[0]).stem}: error: {e}") from None

    return wrapped

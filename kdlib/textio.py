"""One rule for every text file kd-exam reads: UTF-8, a leading byte-order mark dropped (editors on Windows write
one), and a file that is not UTF-8 named with the line and column of its first bad byte.

Python reports an undecodable byte at an offset into its read buffer, not into the file, so the line is found by
reading the file again, line by line, only once it has failed.
"""
from __future__ import annotations

import codecs
import gzip
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from kdlib.errors import DataError

ENCODING = "utf-8-sig"  # UTF-8 whose decoder drops a leading BOM; a BOM is never part of the first word


def open_text(path: str | os.PathLike, newline: str | None = None) -> IO[str]:
    """A text file (gzip-compressed when it ends in .gz) opened for reading by the rule above."""
    path = Path(path)
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding=ENCODING, newline=newline)
    return path.open(encoding=ENCODING, newline=newline)


def lines(path: str | os.PathLike, *, hint: str = "", newline: str | None = None) -> Iterator[str]:
    """The lines of a text file, ends kept; opened now (a missing file fails here), read as they are asked for.
    A byte that is not UTF-8 is a DataError naming the file, line and column, then `hint` (what to do)."""
    return _decoded(Path(path), open_text(path, newline), hint)


def _decoded(path: Path, f: IO[str], hint: str) -> Iterator[str]:
    with f:
        try:
            yield from f
        except UnicodeDecodeError:
            raise not_utf8(path, hint) from None


def read_text(path: str | os.PathLike, *, hint: str = "") -> str:
    try:
        return Path(path).read_text(encoding=ENCODING)
    except UnicodeDecodeError:
        raise not_utf8(Path(path), hint) from None


def not_utf8(path: Path, hint: str = "") -> DataError:
    line, column, byte = first_bad_byte(path)
    return DataError(f"{path}:{line}: not valid UTF-8 (byte 0x{byte:02x} at column {column})"
                     + (f"; {hint}" if hint else "") + ".")


def first_bad_byte(path: str | os.PathLike) -> tuple[int, int, int]:
    """(line, column, byte) of the first byte of `path` that is not UTF-8, 1-based; (0, 0, 0) if there is none."""
    path = Path(path)
    with (gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb")) as f:
        for number, raw in enumerate(f, start=1):  # a \n byte never occurs inside a UTF-8 sequence
            if number == 1:
                raw = raw.removeprefix(codecs.BOM_UTF8)
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as e:
                return number, len(raw[:e.start].decode("utf-8")) + 1, raw[e.start]
    return 0, 0, 0

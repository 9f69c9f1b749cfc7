"""Where the input files are: expand a source path/glob/directory, name and hash the files."""

from __future__ import annotations

import glob
import gzip
import hashlib
import os
from pathlib import Path
from typing import BinaryIO

from tunesmith.config import SourceConfig
from tunesmith.errors import TunesmithError

# File type by suffix (lower case). `.gz` may follow any of them except Parquet.
FILE_KINDS: dict[str, str] = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".csv": "csv",
    ".tsv": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".txt": "text",
    ".text": "text",
    ".md": "text",
    ".markdown": "text",
}
_GLOB_CHARS = frozenset("*?[")


def file_kind(path: Path) -> tuple[str, bool] | None:
    """``(kind, gzipped)`` from the file name, or None for a type we do not read."""
    suffixes = [s.lower() for s in path.suffixes]
    gz = bool(suffixes) and suffixes[-1] == ".gz"
    if gz:
        suffixes = suffixes[:-1]
    kind = FILE_KINDS.get(suffixes[-1]) if suffixes else None
    if kind is None or (gz and kind == "parquet"):
        return None
    return kind, gz


def supported_types() -> str:
    """The suffixes we read, for error messages."""
    return ", ".join(FILE_KINDS) + " (and .gz of any but Parquet)"


def open_binary(path: Path, gz: bool) -> BinaryIO:
    """Open for binary reading; gzip is decompressed as a stream (never all at once)."""
    if gz:
        return gzip.open(path, "rb")  # type: ignore[return-value]
    # A 1 MiB buffer: fewer system calls for line-by-line reads of large files.
    return open(path, "rb", buffering=1 << 20)  # the caller closes it


def display_path(path: Path, base_dir: Path) -> str:
    """The name used in ids, meta and quarantine entries: relative to the config folder.

    A file outside that folder keeps its absolute path rather than a chain of ``../``.
    """
    rel = os.path.relpath(os.path.abspath(path), os.path.abspath(base_dir))
    if rel.startswith(".."):
        return Path(os.path.abspath(path)).as_posix()
    return Path(rel).as_posix()


def _is_hidden(name: str) -> bool:
    # Same convention as pyarrow.dataset: `.git`, `.DS_Store`, Spark's `_SUCCESS`.
    return name.startswith((".", "_"))


def _walk(directory: Path) -> list[Path]:
    """Every non-hidden file under a directory; unlistable folders are returned as paths so
    that reading them yields a quarantine entry instead of silently losing their files."""
    found: list[Path] = []
    unlistable: list[Path] = []

    def on_error(err: OSError) -> None:
        if err.filename:
            unlistable.append(Path(err.filename))

    visited: set[str] = set()
    for root, dirs, files in os.walk(directory, onerror=on_error, followlinks=True):
        real = os.path.realpath(root)
        if real in visited:  # a symlink back up the tree: do not loop forever
            dirs.clear()
            continue
        visited.add(real)
        dirs[:] = [d for d in dirs if not _is_hidden(d)]
        found.extend(Path(root) / f for f in files if not _is_hidden(f))
    return found + unlistable


def _glob(pattern: str, base_dir: Path) -> list[Path]:
    if os.path.isabs(pattern):
        hits = [Path(p) for p in glob.glob(pattern, recursive=True)]
    else:
        # root_dir keeps glob characters in the config folder's own name literal.
        hits = [base_dir / p for p in glob.glob(pattern, root_dir=base_dir, recursive=True)]
    files: list[Path] = []
    for hit in hits:
        files.extend(_walk(hit) if hit.is_dir() else [hit])
    return files


def expand_source(src: SourceConfig, base_dir: Path) -> list[Path]:
    """The files a source names, sorted by name (so ids and hashes are deterministic).

    ``src.path`` is a file, a glob (``raw/*.jsonl``, ``raw/**/*.csv``) or a directory
    (read recursively, skipping names that start with ``.`` or ``_``). Relative paths resolve
    against ``base_dir`` (the config folder).

    Raises:
        TunesmithError: the path does not exist or matches no file; the message names the
            path and the folder searched.
    """
    raw = os.path.expanduser(src.path)
    full = Path(raw) if os.path.isabs(raw) else base_dir / raw
    if _GLOB_CHARS & set(src.path):
        files = _glob(raw, base_dir)
        what = "matches no file"
    elif full.is_dir():
        files = _walk(full)
        what = "is an empty directory"
    elif full.exists() or full.is_symlink():
        files = [full]
    else:
        raise TunesmithError(
            f"source path '{src.path}' does not exist (looked for {full}; relative paths "
            f"resolve against the config folder {base_dir})"
        )
    if not files:
        folder = Path(raw).parent if os.path.isabs(raw) else base_dir
        raise TunesmithError(f"source path '{src.path}' {what} (searched in {folder})")
    return sorted(set(files), key=lambda p: display_path(p, base_dir))


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes, read in chunks (for the snapshot manifest).

    Raises:
        TunesmithError: the file cannot be read (``read_source`` quarantines such a file).
    """
    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except OSError as exc:
        raise TunesmithError(f"cannot read {path}: {exc.strerror or exc}") from None

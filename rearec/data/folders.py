"""A dataset folder (``interactions.*`` [+ ``items.*``], or one RecBole ``*.inter``) -> its file paths.

Datasets are often kept as a folder rather than named file by file. The rule, applied to the folder's own
files (not sub-folders, not hidden files):

- interactions: exactly one ``interactions.<ext>``; if there is none, exactly one RecBole ``<stem>.inter``;
- items (optional): exactly one ``items.<ext>``, or for a RecBole folder ``<stem>.item`` (same stem);

where ``<ext>`` is csv, tsv, txt, inter, parquet or pq, the text ones optionally followed by ``.gz``. The
folder is only a way to find the files: specs hold the resolved file paths, so a dataset given as a folder
and the same files given by path are the same dataset (same cache, same trial keys).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError

TEXT_EXTS = (".csv", ".tsv", ".txt", ".inter")
PARQUET_EXTS = (".parquet", ".pq")
_SHOWN = 12  # at most this many file names in an error message


def _split(name: str) -> tuple[str, str] | None:
    """'interactions.tsv.gz' -> ('interactions', '.tsv'); None if not a supported table file name."""
    lower = name.lower()
    gz = lower.endswith(".gz")
    if gz:
        lower = lower[:-3]
    dot = lower.rfind(".")
    if dot <= 0:
        return None
    stem, ext = lower[:dot], lower[dot:]
    if ext in TEXT_EXTS or (ext in PARQUET_EXTS and not gz):
        return stem, ext
    return None


def _listing(names: list[str]) -> str:
    if not names:
        return "the folder is empty"
    shown = ", ".join(names[:_SHOWN])
    return f"found: {shown}" + (f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else "")


def _one(folder: Path, matches: list[str], what: str, where: str) -> str | None:
    if len(matches) > 1:
        raise ConfigError(where, f"{folder}: folder is ambiguous: several {what} files ({', '.join(matches)}); "
                          "keep one, or name the files with interactions: / items:")
    return matches[0] if matches else None


def resolve_folder(folder: str | Path, where: str = "") -> tuple[str, str | None]:
    """(interactions file, items file or None) of a dataset folder; ConfigError (naming the folder and
    what it holds) when there is no interactions file or more than one candidate."""
    folder = Path(folder)
    try:
        names = sorted(p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    except OSError as exc:
        raise ConfigError(where, f"{folder}: cannot list the folder ({exc.strerror or exc})") from None
    parsed = {name: _split(name) for name in names}
    inter = [n for n, s in parsed.items() if s is not None and s[0] == "interactions"]
    items = [n for n, s in parsed.items() if s is not None and s[0] == "items"]
    chosen = _one(folder, inter, "interactions.*", where)
    if chosen is None:
        recbole = [n for n, s in parsed.items() if s is not None and s[1] == ".inter"]
        chosen = _one(folder, recbole, "RecBole *.inter", where)
        if chosen is None:
            raise ConfigError(where, f"{folder}: folder holds no interactions file (expected interactions.csv, "
                              ".tsv, .txt, .inter or .parquet, text ones optionally .gz, or exactly one RecBole "
                              f"<name>.inter); {_listing(names)}")
        stem = parsed[chosen][0]
        items += [n for n in names if n.lower() in (f"{stem}.item", f"{stem}.item.gz")]
    item_file = _one(folder, sorted(set(items)), "items", where)
    return str(folder / chosen), (str(folder / item_file) if item_file else None)

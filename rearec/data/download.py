"""Fetch the official Amazon Reviews 2023 benchmark files into a raw folder: resumable, verified, atomic.

Official locations (https://amazon-reviews-2023.github.io/, pages "Pure IDs, 5-core" and the item metadata),
with ``BASE = https://mcauleylab.ucsd.edu/public_datasets/data/amazon_2023``:

    BASE/benchmark/5core/timestamp_w_his/<Category>.{train,valid,test}.csv.gz    interactions (+ history)
    BASE/raw/meta_categories/meta_<Category>.jsonl.gz                            item metadata (titles, ...)

The host publishes no checksums. Each file is checked against the size the server announces
(``Content-Length``, and ``Content-Range`` on a resumed request) and, being gzip, against its own CRC-32
and length trailer (a full decompression pass). A file is written as ``<name>.part`` (plus
``<name>.part.json``: URL, size and validator, so a resume can tell whether the remote file changed) and
renamed to its name only once verified, so an interrupted download never leaves a complete-looking file;
running again resumes from the ``.part`` with an HTTP Range request (If-Range guarded).
Standard library only (urllib). ``base_url`` (or $REAREC_AMAZON2023_BASE_URL) points at a mirror.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from .readers import gzip_problem, is_gzip
from .spec import PRESETS

OFFICIAL_BASE = "https://mcauleylab.ucsd.edu/public_datasets/data/amazon_2023"
BASE_ENV = "REAREC_AMAZON2023_BASE_URL"
BENCHMARK_DIR = "benchmark/5core/timestamp_w_his"
META_DIR = "raw/meta_categories"
USER_AGENT = "rearec-data-download/1 (+urllib)"
_GIVE_UP = {400, 401, 403, 404, 410}  # a retry cannot help


class DownloadError(Exception):
    """A file could not be fetched or failed verification. Message: ``url: problem``."""

    def __init__(self, url: str, problem: str):
        self.url, self.problem = url, problem
        super().__init__(f"{url}: {problem}")


@dataclass(frozen=True)
class RemoteFile:
    url: str
    dest: Path  # the final file name in the raw folder
    present_as: tuple[Path, ...]  # files that already satisfy the loader (e.g. an uncompressed copy)


def amazon_files(category: str, raw_dir: Path, base_url: str | None = None) -> list[RemoteFile]:
    """The four files one Amazon 2023 preset reads, in the layout rearec.data.sources expects."""
    base = (base_url or os.environ.get(BASE_ENV) or OFFICIAL_BASE).rstrip("/")
    files = []
    for split in ("train", "valid", "test"):
        name = f"{category}.{split}.csv"
        files.append(RemoteFile(f"{base}/{BENCHMARK_DIR}/{name}.gz", raw_dir / f"{name}.gz",
                                (raw_dir / f"{name}.gz", raw_dir / name)))
    name = f"meta_{category}.jsonl"
    files.append(RemoteFile(f"{base}/{META_DIR}/{name}.gz", raw_dir / f"{name}.gz",
                            (raw_dir / f"{name}.gz", raw_dir / name)))
    return files


def amazon_category(name: str) -> str | None:
    preset = PRESETS.get(name, {})
    return preset.get("category") if preset.get("source") == "amazon2023" else None


# ------------------------------------------------------------------------------------------- progress
def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


class ProgressBar:
    """Plain-text progress on stderr: one redrawn line on a terminal, a line per 10 % (or per 30 s when
    the size is unknown) otherwise, so logs stay short."""

    def __init__(self, name: str, total: int | None, start: int = 0, stream: IO[str] | None = None):
        self.name, self.total, self.start = name, total, start
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.began = self.last = time.monotonic()
        self.step = -1  # last 10 % step printed (non-TTY)
        self.done = start

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.began, 1e-6)
        rate = (self.done - self.start) / elapsed
        if self.total:
            frac = min(self.done / self.total, 1.0)
            bar = "#" * int(24 * frac) + "." * (24 - int(24 * frac))
            eta = f", ETA {int((self.total - self.done) / rate)} s" if rate > 0 and self.done < self.total else ""
            return (f"{self.name} [{bar}] {100 * frac:5.1f}% {_size(self.done)} / {_size(self.total)} "
                    f"({_size(rate)}/s{eta})")
        return f"{self.name} {_size(self.done)} ({_size(rate)}/s, size not announced)"

    def update(self, done: int) -> None:
        self.done = done
        now = time.monotonic()
        if self.tty:
            if now - self.last >= 0.1:
                self.stream.write("\r" + self.line() + "\x1b[K")
                self.stream.flush()
                self.last = now
        elif self.total:
            step = int(10 * done / self.total)
            if step > self.step:
                self.step = step
                self.stream.write(self.line() + "\n")
                self.stream.flush()
        elif now - self.last >= 30:
            self.stream.write(self.line() + "\n")
            self.last = now

    def close(self, note: str = "") -> None:
        text = self.line() + (f" {note}" if note else "")
        self.stream.write(("\r" + text + "\x1b[K\n") if self.tty else (text + "\n"))
        self.stream.flush()


# ------------------------------------------------------------------------------------------- one file
def _read_state(path: Path, url: str) -> dict | None:
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) and state.get("url") == url else None


def _write_state(path: Path, state: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(state))
    os.replace(tmp, path)


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """'bytes 100-199/1000' -> (100, 1000); 'bytes */1000' -> (None, 1000); total None if '*' or absent."""
    match = re.fullmatch(r"\s*bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)\s*", value or "")
    if not match:
        return None, None
    start, total = match.groups()
    return (int(start) if start else None), (int(total) if total != "*" else None)


def _discard(*paths: Path) -> None:
    for path in paths:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def fetch(url: str, dest: Path, *, retries: int = 5, timeout: float = 60.0, backoff: float = 2.0,
          chunk: int = 1 << 20, stream: IO[str] | None = None) -> dict:
    """Download ``url`` to ``dest`` (resuming ``dest.part``), verify it, rename it into place.

    ``retries``: attempts in a row that add no bytes before giving up (an attempt that makes progress
    resets the count, so a connection that keeps dropping still finishes). Returns {bytes, resumed_from}.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    meta = dest.with_name(dest.name + ".part.json")
    state = _read_state(meta, url) if part.exists() else None  # {url, total, validator} of the .part
    if state is None:
        _discard(part, meta)  # a .part without its record (or for another URL) cannot be resumed safely
    resumed_from = part.stat().st_size if part.exists() else 0
    failures = 0

    def failed(problem: str) -> None:
        nonlocal failures
        failures += 1
        if failures > retries:
            raise DownloadError(url, f"{problem} ({failures} attempts in a row without progress)"
                                + (f"; the partial file {part} is kept: run the command again to resume"
                                   if part.exists() else ""))
        time.sleep(backoff * failures)

    while True:
        offset = part.stat().st_size if part.exists() else 0
        headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
            if state.get("validator"):
                headers["If-Range"] = state["validator"]  # a changed file comes back whole (200)
        try:
            response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and offset:  # nothing left to send: complete, or the remote file shrank
                _, total = _content_range(exc.headers.get("Content-Range"))
                if total is not None and total == offset and state.get("total") in (None, total):
                    break
                _discard(part, meta)
                raise DownloadError(url, f"size mismatch: the server announced {state.get('total')} bytes, now "
                                    f"reports {total} after {offset:,} were received; the partial file was "
                                    "deleted: run the command again to start over") from None
            if exc.code in _GIVE_UP:
                raise DownloadError(url, f"HTTP {exc.code} {exc.reason}") from None
            failed(f"HTTP {exc.code} {exc.reason}")
            continue
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:  # refused, unreachable, timeout
            failed(f"cannot reach the server ({getattr(exc, 'reason', exc)})")
            continue
        with response:
            if response.status == 206 and offset:
                start, total = _content_range(response.headers.get("Content-Range"))
                if start != offset or state.get("total") not in (None, total):
                    # Not the bytes asked for, or the remote file changed size: start over from byte 0.
                    problem = (f"size mismatch on resume: asked for bytes {offset:,}- of {state.get('total')}, "
                               f"got {response.headers.get('Content-Range')!r}; starting over")
                    _discard(part, meta)
                    state = None
                    failed(problem)
                    continue
                mode = "ab"
            else:  # 200: the whole file (a fresh start, or the server ignored the range / the file changed)
                length = response.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
                offset, mode = 0, "wb"
                state = {"url": url, "total": total,
                         "validator": response.headers.get("ETag") or response.headers.get("Last-Modified")}
                _write_state(meta, state)
            bar = ProgressBar(dest.name, total, offset, stream)
            received, lost = offset, None
            try:
                with open(part, mode) as fh:
                    # read1: whatever has arrived (up to chunk), so a stalled or slow transfer still lands on
                    # disk block by block and the .part always holds every byte received so far.
                    while block := response.read1(chunk):
                        fh.write(block)
                        fh.flush()
                        received += len(block)
                        bar.update(received)
                    os.fsync(fh.fileno())
            except (http.client.HTTPException, OSError) as exc:  # reset, timeout, incomplete read
                lost = f"connection lost at {received:,} bytes ({exc.__class__.__name__})"
            except KeyboardInterrupt:
                bar.close("(interrupted: run the command again to resume)")
                raise
        if lost is None and (total is None or received == total):
            bar.close()
            break
        if lost is None and received > total:
            _discard(part, meta)
            raise DownloadError(url, f"size mismatch: received {received:,} bytes, the server announced "
                                f"{total:,}; the partial file was deleted")
        problem = lost or f"connection closed at {received:,} of {total:,} bytes"
        bar.close(f"({problem})")
        if received > offset:
            failures = 0  # progress: resume at once
            continue
        failed(problem)

    size = part.stat().st_size
    expected = state.get("total") if state else None
    if expected is not None and size != expected:
        _discard(part, meta)
        raise DownloadError(url, f"size mismatch: {size:,} bytes on disk, the server announced {expected:,}")
    if dest.name.endswith(".gz"):
        problem = gzip_problem(part) if is_gzip(part) else "not gzip data"
        if problem is not None:
            _discard(part, meta)
            raise DownloadError(url, f"the downloaded file fails its gzip check ({problem}); it was deleted: run "
                                "the command again")
    os.replace(part, dest)  # only now does a file with the final name exist
    _discard(meta)
    return {"bytes": size, "resumed_from": resumed_from}


# ------------------------------------------------------------------------------------------- datasets
def download_amazon(name: str, raw_dir: Path, base_url: str | None = None, *, force: bool = False,
                    echo: Callable[[str], None] = print, **fetch_options) -> list[Path]:
    """Fetch the missing official files of an Amazon 2023 preset into ``raw_dir``; return the files in place."""
    category = amazon_category(name)
    if category is None:
        raise ValueError(f"{name!r} is not a built-in Amazon Reviews 2023 dataset")
    out = []
    for remote in amazon_files(category, Path(raw_dir), base_url):
        present = [p for p in remote.present_as if p.is_file()]
        if present and not force:
            echo(f"{name}: {present[0]} already present (delete it or pass --force to fetch it again)")
            out.append(present[0])
            continue
        echo(f"{name}: {remote.url} -> {remote.dest}")
        info = fetch(remote.url, remote.dest, **fetch_options)
        resumed = f", resumed from {info['resumed_from']:,}" if info["resumed_from"] else ""
        echo(f"{name}: {remote.dest.name} complete ({info['bytes']:,} bytes, size and gzip CRC verified{resumed})")
        out.append(remote.dest)
    return out

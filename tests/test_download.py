"""`harness data download` end to end against a real HTTP server on 127.0.0.1 serving the official layout.

The server (http.server in a thread) honours Range and If-Range like a static file host, and can drop a
connection mid-file, stall, or announce a wrong length. Each test checks the bytes on disk, what the client
asked for (the Range of a resumed request), and that no complete-looking file is left after a failure.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from harness.cli import main
from rearec.data import load_dataset
from rearec.data.cli_support import download_command
from rearec.data.download import BASE_ENV, OFFICIAL_BASE, DownloadError, ProgressBar, amazon_files, fetch

ROOT = Path(__file__).resolve().parent.parent
VALID_FROM, TEST_FROM = 1628643414042, 1658002729837  # the official Amazon 2023 cuts (ms)
BENCH = "/benchmark/5core/timestamp_w_his"
META = "/raw/meta_categories"


def video_games_files() -> dict[str, bytes]:
    """Small gzip files in the official layout and format: 40 users x 12 interactions (8 before the valid
    cut, 2 in valid, 2 in test) over 24 items, with the history column, plus item metadata with titles."""
    header = "user_id,parent_asin,rating,timestamp,history\n"
    parts = {"train": [header], "valid": [header], "test": [header]}
    for u in range(40):
        seen = []
        for k in range(12):
            item = f"B{(u + 5 * k) % 24:04d}"
            if k < 8:
                split, ts = "train", VALID_FROM - 10**10 + u * 10**6 + k * 10**8
            elif k < 10:
                split, ts = "valid", VALID_FROM + u * 10**6 + k
            else:
                split, ts = "test", TEST_FROM + u * 10**6 + k
            parts[split].append(f"U{u:03d},{item},5.0,{ts},{' '.join(seen)}\n")
            seen.append(item)
    files = {f"{BENCH}/Video_Games.{s}.csv.gz": gzip.compress("".join(rows).encode(), mtime=0)
             for s, rows in parts.items()}
    meta = "".join(json.dumps({"parent_asin": f"B{i:04d}", "title": f"Game {i}", "description": ["fun"],
                               "price": "None"}) + "\n" for i in range(24))
    files[f"{META}/meta_Video_Games.jsonl.gz"] = gzip.compress(meta.encode(), mtime=0)
    return files


class Handler(BaseHTTPRequestHandler):
    """GET with Range: bytes=N- and If-Range (ETag), like a static file server; faults set per path."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        srv = self.server
        srv.requests.append({"path": self.path, "range": self.headers.get("Range"),
                             "if_range": self.headers.get("If-Range")})
        body = srv.files.get(self.path)
        if body is None:
            self.send_error(404, "Not Found")
            return
        etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
        start, status = 0, 200
        wanted = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if wanted and self.headers.get("If-Range") in (None, etag) and not srv.no_range:
            start, status = int(wanted.group(1)), 206
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        self.send_response(status)
        self.send_header("Content-Type", "application/gzip")
        self.send_header("Content-Length", str(len(body) - start + srv.lie.get(self.path, 0)))
        self.send_header("ETag", etag)
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.end_headers()
        stop = len(body)
        drops = srv.drops.get(self.path)
        if drops:  # send up to this absolute offset, then close the connection
            stop = max(start, drops.pop(0) if len(drops) > 1 else drops[0])
        self.wfile.write(body[start:stop])
        self.wfile.flush()
        if self.path in srv.stall and stop < len(body):
            srv.stalled.set()
            srv.release.wait(60)  # hold the connection open, sending nothing
        if stop < len(body) or self.path in srv.lie:
            self.close_connection = True


@pytest.fixture
def server():
    """A local server with the Video_Games files; .files / .drops / .lie / .stall change its behaviour."""
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    srv.files, srv.requests = video_games_files(), []
    srv.drops, srv.lie, srv.stall, srv.no_range = {}, {}, set(), False
    srv.stalled, srv.release = threading.Event(), threading.Event()
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.release.set()
    srv.shutdown()
    srv.server_close()


TRAIN = f"{BENCH}/Video_Games.train.csv.gz"


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_downloads_the_official_layout_and_the_files_load(server, tmp_path):
    lines: list[str] = []
    assert download_command(["amazon2023-video-games"], tmp_path, base_url=server.url, echo=lines.append,
                            backoff=0, stream=io.StringIO())
    raw = tmp_path / "raw" / "amazon2023-video-games"
    expected = {path.rsplit("/", 1)[1]: body for path, body in server.files.items()}
    assert leftovers(raw) == sorted(expected)  # no .part / .part.json left
    assert {name: (raw / name).read_bytes() for name in expected} == expected
    assert sorted(r["path"] for r in server.requests) == sorted(server.files)
    assert all(r["range"] is None for r in server.requests)
    assert lines[-1].endswith("harness data prepare amazon2023-video-games --cache-dir " + str(tmp_path))
    # The loader reads the downloaded files in place: 40 users, 24 items, 40 x 2 valid and test rows.
    data = load_dataset("amazon2023-video-games", tmp_path)
    assert (data.n_users, data.n_items, len(data.valid), len(data.test)) == (40, 24, 80, 80)
    assert data.params["notes"]["amazon_files"] == "benchmark"
    # A second run finds everything present and asks the server for nothing.
    server.requests.clear()
    assert download_command(["amazon2023-video-games"], tmp_path, base_url=server.url, echo=lines.append)
    assert server.requests == [] and "already present" in lines[-2]


def test_official_urls_and_env_override(monkeypatch, tmp_path):
    monkeypatch.delenv(BASE_ENV, raising=False)
    urls = [f.url for f in amazon_files("CDs_and_Vinyl", tmp_path)]
    assert urls == [f"{OFFICIAL_BASE}/benchmark/5core/timestamp_w_his/CDs_and_Vinyl.{s}.csv.gz"
                    for s in ("train", "valid", "test")] + [f"{OFFICIAL_BASE}/raw/meta_categories/meta_CDs_and_Vinyl.jsonl.gz"]
    assert OFFICIAL_BASE == "https://mcauleylab.ucsd.edu/public_datasets/data/amazon_2023"
    monkeypatch.setenv(BASE_ENV, "http://mirror.example/amazon/")
    assert amazon_files("Software", tmp_path)[0].url == "http://mirror.example/amazon/benchmark/5core/timestamp_w_his/Software.train.csv.gz"
    assert amazon_files("Software", tmp_path, "http://other")[3].url == "http://other/raw/meta_categories/meta_Software.jsonl.gz"


def test_a_dropped_connection_is_resumed_with_a_range_request(server, tmp_path):
    body = server.files[TRAIN]
    cut = len(body) // 3
    server.drops[TRAIN] = [cut, 2 * cut, len(body)]  # two drops, then the rest
    dest = tmp_path / "Video_Games.train.csv.gz"
    info = fetch(server.url + TRAIN, dest, backoff=0, stream=io.StringIO())
    assert dest.read_bytes() == body and info["bytes"] == len(body) and info["resumed_from"] == 0
    assert [r["range"] for r in server.requests] == [None, f"bytes={cut}-", f"bytes={2 * cut}-"]
    assert all(r["if_range"] == server.requests[1]["if_range"] and r["if_range"].startswith('"')
               for r in server.requests[1:])
    assert leftovers(tmp_path) == [dest.name]


def test_an_interrupted_download_leaves_only_a_part_file_and_resumes(server, tmp_path):
    body = server.files[TRAIN]
    cut = len(body) // 2
    server.drops[TRAIN] = [cut]  # every attempt stops at the same byte: no progress after the first
    dest = tmp_path / "Video_Games.train.csv.gz"
    with pytest.raises(DownloadError, match=r"Video_Games\.train\.csv\.gz: connection closed at .* the partial "
                                            r"file .*\.part is kept: run the command again to resume"):
        fetch(server.url + TRAIN, dest, retries=1, backoff=0, stream=io.StringIO())
    assert not dest.exists()
    assert leftovers(tmp_path) == [dest.name + ".part", dest.name + ".part.json"]
    assert (tmp_path / (dest.name + ".part")).stat().st_size == cut
    server.drops.clear()
    server.requests.clear()
    info = fetch(server.url + TRAIN, dest, backoff=0, stream=io.StringIO())
    assert info["resumed_from"] == cut and dest.read_bytes() == body
    assert [r["range"] for r in server.requests] == [f"bytes={cut}-"]
    assert leftovers(tmp_path) == [dest.name]


def test_a_changed_remote_file_restarts_instead_of_appending(server, tmp_path):
    old = server.files[TRAIN]
    server.drops[TRAIN] = [len(old) // 2]
    dest = tmp_path / "f.csv.gz"
    with pytest.raises(DownloadError):
        fetch(server.url + TRAIN, dest, retries=0, backoff=0, stream=io.StringIO())
    new = gzip.compress(b"user_id,parent_asin,rating,timestamp,history\nU,B,5.0,1,\n" * 50, mtime=0)
    server.files[TRAIN] = new  # new ETag: If-Range no longer matches, the server sends the whole file
    server.drops.clear()
    fetch(server.url + TRAIN, dest, backoff=0, stream=io.StringIO())
    assert dest.read_bytes() == new


def test_a_server_without_range_support_sends_the_whole_file_again(server, tmp_path):
    body = server.files[TRAIN]
    server.drops[TRAIN] = [len(body) // 2, len(body)]
    server.no_range = True  # answers every request with 200 and the whole file
    dest = tmp_path / "f.csv.gz"
    fetch(server.url + TRAIN, dest, backoff=0, stream=io.StringIO())
    assert dest.read_bytes() == body
    assert [r["range"] for r in server.requests] == [None, f"bytes={len(body) // 2}-"]


def test_a_size_mismatch_is_an_error_and_leaves_nothing(server, tmp_path):
    server.lie[TRAIN] = 100  # announces 100 bytes more than the file has
    dest = tmp_path / "Video_Games.train.csv.gz"
    with pytest.raises(DownloadError, match=r"Video_Games\.train\.csv\.gz: size mismatch: the server announced "
                                            rf"{len(server.files[TRAIN]) + 100} bytes, now reports "
                                            rf"{len(server.files[TRAIN])}"):
        fetch(server.url + TRAIN, dest, backoff=0, stream=io.StringIO())
    assert leftovers(tmp_path) == []


def test_a_damaged_gzip_on_the_server_is_rejected(server, tmp_path):
    good = server.files[TRAIN]
    server.files[TRAIN] = good[: len(good) - 6]  # a truncated copy, served with its own (consistent) length
    dest = tmp_path / "Video_Games.train.csv.gz"
    with pytest.raises(DownloadError, match=r"fails its gzip check \(truncated gzip file"):
        fetch(server.url + TRAIN, dest, backoff=0, stream=io.StringIO())
    assert leftovers(tmp_path) == []


def test_404_names_the_url_and_exits_3(server, tmp_path, capsys):
    code = main(["data", "download", "amazon2023-video-games", "--cache-dir", str(tmp_path),
                 "--base-url", server.url + "/nowhere"])
    err = capsys.readouterr().err
    assert code == 3
    assert f"harness: error: data download: {server.url}/nowhere{TRAIN}: HTTP 404 Not Found" in err
    assert leftovers(tmp_path / "raw" / "amazon2023-video-games") == []


def test_progress_bar_plain_and_tty():
    plain = io.StringIO()
    bar = ProgressBar("f.gz", 1000, stream=plain)
    for done in range(0, 1001, 50):
        bar.update(done)
    bar.close()
    lines = plain.getvalue().splitlines()
    assert "\r" not in plain.getvalue() and 11 <= len(lines) <= 13  # one line per 10 %, plus the final one
    assert lines[-1].startswith("f.gz [########################] 100.0% 1.0 KB / 1.0 KB")

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty = Terminal()
    bar = ProgressBar("f.gz", None, stream=tty)
    bar.update(5000)
    bar.close()
    assert tty.getvalue().startswith("\rf.gz 5.0 KB") and tty.getvalue().endswith("\x1b[K\n")


def test_yelp_prints_what_to_fetch_and_where(tmp_path, capsys):
    assert main(["data", "download", "yelp", "--cache-dir", str(tmp_path)]) == 3
    out = capsys.readouterr().out
    folder = (tmp_path / "raw" / "yelp").absolute()
    assert "https://business.yelp.com/data/resources/open-dataset/" in out
    assert "put yelp_academic_dataset_review.json (required) and yelp_academic_dataset_business.json" in out
    assert f"{folder}/" in out and f"harness data prepare yelp --cache-dir {tmp_path}" in out
    folder.mkdir(parents=True)
    (folder / "yelp_academic_dataset_review.json").write_text("{}\n")
    assert main(["data", "download", "yelp", "--cache-dir", str(tmp_path)]) == 0
    assert "is in place" in capsys.readouterr().out


def test_kill_mid_download_then_rerun_through_the_cli(server, tmp_path):
    """kill -9 while a file is half sent: nothing with a final name exists; the rerun resumes it."""
    body = server.files[TRAIN]
    server.drops[TRAIN] = [len(body) // 2]
    server.stall.add(TRAIN)
    command = [sys.executable, "-m", "harness.cli", "data", "download", "amazon2023-video-games",
               "--cache-dir", str(tmp_path), "--base-url", server.url]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    raw = tmp_path / "raw" / "amazon2023-video-games"
    part = raw / "Video_Games.train.csv.gz.part"
    try:
        assert server.stalled.wait(60), "the download never started"
        deadline = time.monotonic() + 30
        while not (part.exists() and part.stat().st_size == len(body) // 2):
            assert time.monotonic() < deadline, "the half-sent bytes never reached the .part file"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert leftovers(raw) == ["Video_Games.train.csv.gz.part", "Video_Games.train.csv.gz.part.json"]
    server.release.set()
    server.drops.clear()
    server.stall.clear()
    server.requests.clear()
    rerun = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    assert server.requests[0] == {"path": TRAIN, "range": f"bytes={len(body) // 2}-",
                                  "if_range": server.requests[0]["if_range"]}
    assert (raw / "Video_Games.train.csv.gz").read_bytes() == body
    assert f"resumed from {len(body) // 2:,}" in rerun.stdout
    assert "100.0%" in rerun.stderr  # the progress bar (plain text: stderr is not a terminal)
    assert len(leftovers(raw)) == 4


def test_download_help_names_the_options_and_the_official_host(capsys):
    with pytest.raises(SystemExit) as info:
        main(["data", "download", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert info.value.code == 0 and out.startswith("usage: harness data download")
    assert all(option in out for option in ("--base-url URL", "--force", "--retries", "--timeout", "--raw-dir"))
    assert OFFICIAL_BASE in out.replace(" ", "") and "Exit 3" in out  # argparse may wrap the URL

"""A real two-node Ray cluster on this one machine (`ray start --head` + `ray start --address`, as the
README's recipe): trials spread over nodes and record where they ran; a worker node killed mid-study loses
nothing; fractional GPUs pack four trials on one (logical) GPU while the trials compute on the CPU.

The cluster belongs to this module: its own temp dirs, free ports, and it is cleaned up by the process
ids of its own processes (never `ray stop`, which would end every Ray on the machine, other runs' too).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from harness.cli import main
from harness.store import Store

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
# tests/conftest.py's tiny study, read here because the module's study() helper builds on it
_TINY = yaml.safe_load((ROOT / "tests/tiny_study.yaml").read_text())
TINY_DATASET, TINY_PARAMS = _TINY["datasets"][0], _TINY["params"]
HARNESS = [sys.executable, "-m", "harness.cli"]
RAY = str(Path(sys.executable).with_name("ray"))
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}


def free_ports(n: int) -> list[int]:
    """n ports no one listens on now (held open together so they differ)."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def session_pids(sid: int) -> list[int]:
    """Processes of one Unix session: everything one `ray start` left running (its daemons keep the
    session of the `ray start` we started in a new session, also after it exits)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[3]) == sid:  # fields after "(comm)": state ppid pgrp session
                pids.append(int(entry.name))
    return pids


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


class Cluster:
    """Ray nodes started with `ray start`, each in its own session and temp dir under ``root``."""

    def __init__(self, root: Path):
        self.root = root
        self.sessions: dict[str, int] = {}  # node name -> session id of its processes
        self.address = ""

    def _start(self, name: str, args: list[str]) -> str:
        assert name not in self.sessions, f"node {name} exists"
        agent_port, = free_ports(1)
        command = [RAY, "start", *args, "--dashboard-agent-listen-port", str(agent_port),
                   "--temp-dir", str(self.root / name), "--disable-usage-stats"]
        proc = subprocess.Popen(command, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
        self.sessions[name] = proc.pid
        with open(self.root / "sessions", "a") as listed:  # for the reaper (see cluster)
            listed.write(f"{proc.pid}\n")
        out, _ = proc.communicate(timeout=180)
        assert proc.returncode == 0, f"{' '.join(command)}\n{out}"
        return out

    def start_head(self, num_cpus: int) -> None:
        port, dashboard, client = free_ports(3)
        out = self._start("head", ["--head", "--port", str(port), "--num-cpus", str(num_cpus),
                                   "--include-dashboard", "false", "--dashboard-port", str(dashboard),
                                   "--ray-client-server-port", str(client)])
        # the head prints the address other nodes join with: its IP (not 127.0.0.1) and port
        self.address = re.search(r"ray start --address='([^']+)'", out).group(1)

    def start_worker(self, name: str, num_cpus: int, num_gpus: int = 0) -> None:
        self._start(name, ["--address", self.address, "--num-cpus", str(num_cpus), "--num-gpus", str(num_gpus)])

    def raylet(self, name: str) -> tuple[int, str]:
        """(pid, Ray node id) of a node's raylet."""
        for pid in session_pids(self.sessions[name]):
            line = _cmdline(pid)
            match = re.search(r"--node_id=([0-9a-f]+)", line)
            if "/raylet " in line and match:
                return pid, match.group(1)
        raise AssertionError(f"no raylet for node {name}")

    def alive(self) -> list[str]:
        return [name for name, sid in self.sessions.items() if any("/raylet " in _cmdline(p) for p in session_pids(sid))]

    def pids(self) -> list[int]:
        return [pid for sid in self.sessions.values() for pid in session_pids(sid)]

    def kill_node(self, name: str) -> str:
        """The node is lost as when its machine goes away: kill -9 of its raylet, then at once of every
        other process of the node (its workers too: a worker outlives its raylet for a moment, long enough
        to finish a tiny trial and hand its result straight to the driver). Returns the node id."""
        pid, node_id = self.raylet(name)
        os.kill(pid, signal.SIGKILL)
        for other in session_pids(self.sessions[name]):
            _kill(other)
        return node_id

    def stop(self) -> None:
        for name in list(self.sessions):
            for pid in session_pids(self.sessions.pop(name)):
                _kill(pid)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


# Run in its own session, so a signal to pytest's process group (`timeout`) spares it: if pytest dies
# without its teardown (SIGKILL, timeout), it kills the cluster's sessions listed in <root>/sessions.
REAPER = """
import os, shutil, sys, time
from pathlib import Path
watched, root = int(sys.argv[1]), Path(sys.argv[2])
def alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
while root.exists() and alive(watched):
    time.sleep(1)
if root.exists():
    sids = {int(s) for s in (root / "sessions").read_text().split()}
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and int((entry / "stat").read_text().rsplit(")", 1)[1].split()[3]) in sids:
                os.kill(int(entry.name), 9)
        except (OSError, IndexError, ValueError):
            pass
    shutil.rmtree(root, ignore_errors=True)
"""


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> Path:
    """Stands for the filesystem every node mounts: one dataset cache for the module's studies."""
    return tmp_path_factory.mktemp("shared")


@pytest.fixture(scope="module")
def cluster():
    """Head and worker: 1 CPU each, so one-CPU trials must use both nodes to run two at once. A short
    temp root: Ray's socket paths must fit in 107 bytes."""
    root = Path(tempfile.mkdtemp(prefix="rc-", dir="/tmp"))
    (root / "sessions").touch()
    reaper = subprocess.Popen([sys.executable, "-c", REAPER, str(os.getpid()), str(root)], start_new_session=True)
    nodes = Cluster(root)
    try:
        nodes.start_head(num_cpus=1)
        nodes.start_worker("worker", num_cpus=1)
        yield nodes
    finally:
        nodes.stop()
        subprocess.run(["rm", "-rf", str(root)], check=False)
        reaper.wait(timeout=30)  # it sees the root gone and ends


def study(name: str, **overrides) -> dict:
    raw = {"name": name, "datasets": [TINY_DATASET], "backbones": ["sasrec"],
           "methods": ["base", {"name": "erl", "reasoning_steps": 1}], "params": dict(TINY_PARAMS),
           "seeds": [0, 1], "selection": {"metric": "valid/ndcg@20"}, "resources": {"cpu": 1}}
    raw.update(overrides)
    return raw


def harness(*args, cwd: Path, timeout: float = 400) -> subprocess.CompletedProcess:
    return subprocess.run([*HARNESS, *map(str, args)], cwd=cwd, env=ENV, capture_output=True, text=True,
                          timeout=timeout)


def sql(cwd: Path, query: str) -> list[dict]:
    """Rows of a query on the study's database, read-only, in this process (the driver has ended)."""
    frame = Store(cwd / "results.duckdb", read_only=True).query(query)
    return json.loads(frame.to_json(orient="records"))


def status(capsys, cwd: Path, *args) -> str:
    """`harness status` in this process (it starts no Ray)."""
    capsys.readouterr()
    assert main(["status", "--db", str(cwd / "results.duckdb"), *args]) == 0
    return capsys.readouterr().out


def write_study(cwd: Path, raw: dict) -> str:
    cwd.mkdir(parents=True, exist_ok=True)
    (cwd / f"{raw['name']}.yaml").write_text(json.dumps(raw))
    return f"{raw['name']}.yaml"


def open_files(pids: list[int]) -> set[str]:
    files = set()
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                try:
                    files.add(os.readlink(fd))
                except OSError:
                    pass
        except OSError:
            pass
    return files


def test_a_study_spreads_over_two_nodes_and_records_where_each_trial_ran(cluster, shared, tmp_path, capsys):
    name = write_study(tmp_path, study("spread"))
    _, head_id = cluster.raylet("head")
    _, worker_id = cluster.raylet("worker")
    driver = subprocess.Popen([*HARNESS, "run", name, "--address", cluster.address, "--runs", shared / "runs",
                               "--cache-dir", shared / "data"], cwd=tmp_path, env=ENV, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    db = str(tmp_path / "results.duckdb")
    seen_open: set[str] = set()
    while driver.poll() is None:  # the cluster's processes (trials included) never open the database
        seen_open |= {f for f in open_files(cluster.pids()) if f.startswith(db)}
        time.sleep(0.2)
    out = driver.stdout.read()
    assert driver.returncode == 0, out
    assert not seen_open
    assert f"Ray: joined {cluster.address}" in out and "2 CPU, 0 GPU" in out and "done 4/4" in out
    rows = sql(tmp_path, "SELECT trial_key, status, host, node_id, run_dir, device FROM trials")
    assert len(rows) == 4 and {r["status"] for r in rows} == {"completed"}
    assert {r["node_id"] for r in rows} == {head_id, worker_id}  # both nodes ran trials
    assert {r["host"] for r in rows} == {socket.gethostname()}
    for r in rows:  # trial directories on the shared path, complete
        run_dir = Path(r["run_dir"])
        assert run_dir.parent == shared / "runs" / "spread" and (run_dir / "result.json").exists()
        assert json.loads((run_dir / "trial.json").read_text())["node_id"] == r["node_id"]
    assert list((shared / "data").rglob("*.parquet"))  # the dataset cache, prepared by the driver
    assert (shared / "runs" / "_ray").is_dir()  # Ray Tune's own experiment state too

    text = status(capsys, tmp_path)
    assert "4/4 completed, 0 failed, 0 pending" in text, text
    ran_on = next(line for line in text.splitlines() if "ran on:" in line)
    assert f"Ray node {head_id[:12]}" in ran_on and f"Ray node {worker_id[:12]}" in ran_on


def kill_node_mid_trial(cluster: Cluster, node: str, runs: Path, driver: subprocess.Popen) -> tuple[str, str]:
    """Wait until a trial runs on ``node`` (its trial.json names the node, no result yet), then kill -9
    the node's raylet. Returns (that trial's key, the node id)."""
    _, node_id = cluster.raylet(node)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        assert driver.poll() is None, "the study ended before a trial ran on the worker node:\n" + driver.stdout.read()
        for path in runs.glob("*/trial.json"):
            try:
                info = json.loads(path.read_text())
            except ValueError:
                continue
            if info.get("node_id") == node_id and not (path.parent / "result.json").exists():
                cluster.kill_node(node)
                return info["key"], node_id
        time.sleep(0.1)
    raise AssertionError("no trial ran on the worker node")


def run_with_a_node_killed(cluster: Cluster, cwd: Path, data: Path, node: str, *args) -> tuple[int, str, str, str]:
    """`harness run` of the 'lost' study with ``node`` killed mid-trial: (exit code, output, key, node id)."""
    name = write_study(cwd, study("lost", params={**TINY_PARAMS, "max_epochs": 4, "patience": 4}))
    driver = subprocess.Popen([*HARNESS, "run", name, "--address", cluster.address, "--runs", cwd / "runs",
                               "--cache-dir", data, *args], cwd=cwd, env=ENV, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        key, node_id = kill_node_mid_trial(cluster, node, cwd / "runs" / "lost", driver)
        out, _ = driver.communicate(timeout=400)
    finally:
        if driver.poll() is None:
            driver.kill()
    return driver.returncode, out, key, node_id


def test_a_lost_node_s_trial_is_retried_on_a_surviving_node(cluster, shared, tmp_path):
    _, head_id = cluster.raylet("head")
    code, out, key, lost_id = run_with_a_node_killed(cluster, tmp_path, shared / "data", "worker", "--retries", "1")
    assert code == 0, out
    assert f"Ray node {lost_id[:12]}: node lost" in out and "retrying" in out and "done 4/4" in out
    rows = sql(tmp_path, "SELECT trial_key, status, node_id, error FROM trials")
    assert len(rows) == 4 and {r["status"] for r in rows} == {"completed"}
    (killed,) = [r for r in rows if r["trial_key"] == key]
    assert killed["node_id"] == head_id and killed["error"] is None  # it ran again, on the head


def test_a_lost_node_without_retries_fails_clearly_and_a_rerun_completes_without_duplicates(cluster, shared, tmp_path,
                                                                                            capsys):
    workers = [name for name in cluster.alive() if name != "head"]
    if not workers:  # the previous test killed the first one
        cluster.start_worker("worker2", num_cpus=1)
        workers = ["worker2"]
    code, out, key, lost_id = run_with_a_node_killed(cluster, tmp_path, shared / "data", workers[0])
    assert code == 1, out  # exit 1: a trial failed; the study itself finished
    assert "1 failed" in out and "3 trials completed now" in out
    rows = {r["trial_key"]: r for r in sql(tmp_path, "SELECT trial_key, status, node_id, host, error FROM trials")}
    assert sorted(r["status"] for r in rows.values()) == ["completed"] * 3 + ["failed"]
    failed = rows[key]
    assert failed["status"] == "failed" and failed["node_id"] == lost_id and failed["host"] == socket.gethostname()
    head, _, raw = failed["error"].partition("\n\nRay's own error text:\n")
    assert head.startswith(f"node lost: the Ray node running this trial (host {socket.gethostname()}, Ray node "
                           f"{lost_id[:12]}) stopped responding") and "--retries N" in head
    assert "is unavailable" in raw and "RpcError" in raw  # Ray's own words, kept below

    text = status(capsys, tmp_path)
    assert "3/4 completed, 1 failed, 0 pending" in text, text
    line = next(ln for ln in text.splitlines() if ln.startswith(f"  failed {key[:12]}"))
    assert f": node lost: the Ray node running this trial (host {socket.gethostname()}, Ray node {lost_id[:12]})" in line
    verbose = status(capsys, tmp_path, "-v")
    assert "Ray's own error text:" in verbose and "RpcError" in verbose

    rerun = harness("run", "lost.yaml", "--address", cluster.address, "--runs", tmp_path / "runs", "--cache-dir",
                    shared / "data", cwd=tmp_path)
    assert rerun.returncode == 0 and "3 already complete, 1 to run" in rerun.stdout, rerun.stdout + rerun.stderr
    counts = sql(tmp_path, "SELECT (SELECT count(*) FROM trials) AS trials, "
                 "(SELECT count(DISTINCT trial_key) FROM trials) AS keys, "
                 "(SELECT count(*) FROM trials WHERE status = 'completed') AS completed, "
                 "(SELECT count(*) FROM epochs) AS epochs, "
                 "(SELECT count(*) FROM (SELECT DISTINCT trial_key, epoch FROM epochs)) AS epoch_keys, "
                 "(SELECT count(*) FROM metrics) AS metrics, "
                 "(SELECT count(*) FROM (SELECT DISTINCT trial_key, split, step, user_group, metric FROM metrics))"
                 " AS metric_keys, (SELECT count(*) FROM study_trials) AS links")[0]
    assert counts["trials"] == counts["keys"] == counts["completed"] == counts["links"] == 4, counts
    assert counts["epochs"] == counts["epoch_keys"] and counts["metrics"] == counts["metric_keys"] > 0, counts

    # A rerun with other seeds redefines the study (here to its seed-1 half, complete: nothing to run, so
    # no Ray): seed 0's trials stay in the database but no longer count ("4/2 completed" before)
    redefined = harness("run", "lost.yaml", "--set", "seeds=[1]", "--runs", tmp_path / "runs", "--cache-dir",
                        shared / "data", cwd=tmp_path)
    assert redefined.returncode == 0 and "2 already complete, 0 to run" in redefined.stdout, redefined.stdout
    text = status(capsys, tmp_path)
    assert "lost (grid" in text and "2/2 completed, 0 failed, 0 pending" in text, text
    assert "2 earlier trials of this study lie outside its current definition" in text


def max_overlap(intervals: list[tuple[str, str]]) -> int:
    """The most intervals (ISO start, finish) that hold at one instant (a finish before a start at a tie)."""
    events = sorted([(start, 1) for start, _ in intervals] + [(finish, -1) for _, finish in intervals],
                    key=lambda e: (e[0], e[1]))
    most = now = 0
    for _, step in events:
        now += step
        most = max(most, now)
    return most


def test_fractional_gpus_pack_four_trials_on_one_logical_gpu(cluster, shared, tmp_path):
    # A third node declares one GPU it does not have; the hidden test switch lets Ray schedule the GPU
    # requests against it while the trials compute on the CPU. CPU is ample (0.25 per trial): only the
    # GPU limits how many run at once. (4 CPUs: a raylet starts at most min(cores, CPUs) worker
    # processes at a time and prestarts one per CPU, so the four trials' actors start together.)
    cluster.start_worker("gpu", num_cpus=4, num_gpus=1)
    _, gpu_id = cluster.raylet("gpu")
    # Long enough that the four overlap although their actors become ready one after another (~4-6 s
    # apart on a loaded 2-core box): 12 epochs (~12-17 s) gave an overlap of 3 in CI twice, so 36 (~50 s).
    quarter = study("quarter", methods=["base"], seeds=[0, 1, 2, 3], params={**TINY_PARAMS, "max_epochs": 36,
                                                                             "patience": 36},
                    resources={"cpu": 0.25, "gpu": 0.25})
    whole = study("whole", methods=["base"], seeds=[10, 11], resources={"cpu": 0.25, "gpu": 1})
    for raw in (quarter, whole):
        run = harness("run", write_study(tmp_path, raw), "--address", cluster.address, "--runs", tmp_path / "runs",
                      "--cache-dir", shared / "data", "--cpu-with-logical-gpus", cwd=tmp_path)
        assert run.returncode == 0, run.stdout + run.stderr
        assert f"resources per trial: 0.25 CPU, {raw['resources']['gpu']:g} GPU; device cpu" in run.stdout
    rows = sql(tmp_path, "SELECT s.study, strftime(t.started_at, '%Y-%m-%dT%H:%M:%S.%f') AS started, "
               "strftime(t.finished_at, '%Y-%m-%dT%H:%M:%S.%f') AS finished, t.device, t.node_id, t.peak_gpu_bytes, "
               "t.env->'$.ray_gpu_ids' AS gpus FROM trials t JOIN study_trials s USING (trial_key)")
    assert len(rows) == 6
    assert {(r["device"], r["node_id"], r["peak_gpu_bytes"], r["gpus"]) for r in rows} == {
        ("cpu", gpu_id, None, '["0"]')}  # Ray granted GPU 0 to each; torch never touched CUDA
    by_study = {name: [(r["started"], r["finished"]) for r in rows if r["study"] == name] for name in ("quarter", "whole")}
    assert max_overlap(by_study["quarter"]) == 4, by_study  # all four at once on the one GPU
    assert max_overlap(by_study["whole"]) == 1, by_study  # gpu: 1 runs alone

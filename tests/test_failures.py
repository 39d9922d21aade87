"""Lost nodes and dead workers in plain words, the test-only logical-GPU device, and `harness status` lines
(counts against the current definition, where trials ran) -- without Ray."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.errors import ResourceError
from harness.expand import expand
from harness.failures import RAW_SEPARATOR, classify, explain, headline
from harness.progress import summary_line
from harness.report.status import first_line, study_lines
from harness.runner import resolve_resources
from harness.store import Store
from harness.study import Resources, load_study

ROOT = Path(__file__).resolve().parent.parent

NODE = "81f5dc406e3cb46cf0bd33db9111e320c36610a67920f6b49301292d"
# Ray 2.60's error file after `kill -9` of the raylet running the trial (tests/test_cluster.py makes it)
RAY_NODE_LOST = ("Failure # 1 (occurred at 2026-12-02_01-09-58)\nThe actor 37163c4e38f8c7f3aaa25cc702000000 is "
                 "unavailable: The actor is temporarily unavailable: RpcError: RPC error: Socket closed rpc_code: 14. "
                 "The task may or may not have been executed on the actor.")
TRIAL_RAISED = ("Failure # 1\nTraceback (most recent call last):\n  File \"x.py\", line 1\nray.exceptions.RayTaskError"
                "(ValueError): ray::ImplicitFunc.train() (pid=1, ip=10.0.0.1)\nValueError: the node died of boredom")


def test_a_lost_node_is_said_plainly_with_ray_s_text_kept_below():
    error = explain(RAY_NODE_LOST, "box", NODE, attempts=1, node_alive=True)
    head, raw = error.split(RAW_SEPARATOR)
    assert raw == RAY_NODE_LOST
    assert head == ("node lost: the Ray node running this trial (host box, Ray node 81f5dc406e3c) stopped responding "
                    "(its raylet was killed or crashed, or its machine went away); 1 attempt, no retry left. Re-run "
                    "the study to run the trial again, or pass --retries N to retry it on a surviving node.")
    assert headline(error) == summary_line(error) == first_line(error, 400) == head
    assert first_line(error, 20) == head[:19] + "…"


def test_what_counts_as_a_lost_node_or_a_dead_worker():
    died = "The actor died unexpectedly before finishing this task."
    assert classify(RAY_NODE_LOST) == "node lost"
    assert classify(died, node_alive=False) == "node lost"  # Ray already marked its node dead
    assert classify(died, node_alive=True) == classify(died) == "worker died"
    worker = explain(died, None, None, attempts=3)
    assert worker.startswith("worker died: the process running this trial on an unknown node ended without an "
                             "error from the trial") and "; 3 attempts, no retry left." in worker
    assert classify(TRIAL_RAISED) is None and explain(TRIAL_RAISED, "box", NODE) == TRIAL_RAISED  # its own error
    assert headline(TRIAL_RAISED) == "ValueError: the node died of boredom"  # a traceback: its exception
    assert headline(None) == "" and first_line(None) == "no error recorded"


@pytest.mark.parametrize("requested, cluster, expected", [
    (Resources(0.25, 0.25), (1, 1, 1), (Resources(0.25, 0.25), "cpu")),  # Ray packs by GPU, torch on CPU
    (Resources(1, 1.0), (2, 4, 1), (Resources(1, 1.0), "cpu")),
])
def test_cpu_with_logical_gpus_keeps_the_gpu_request_and_computes_on_cpu(requested, cluster, expected):
    assert resolve_resources(requested, "cpu-with-logical-gpus", *cluster) == expected


@pytest.mark.parametrize("requested, cluster, problem", [
    (Resources(1, 0.25), (0, 2, 0), "declares GPUs"),
    (Resources(1, 0.0), (1, 2, 1), "needs a GPU request"),
    (Resources(1, 2.0), (2, 2, 1), "largest node has 1"),
])
def test_cpu_with_logical_gpus_refuses_what_would_hang(requested, cluster, problem):
    with pytest.raises(ResourceError, match=problem):
        resolve_resources(requested, "cpu-with-logical-gpus", *cluster)


def test_status_counts_the_current_definition_names_nodes_and_earlier_members(tmp_path, fake_output):
    base, erl, prl = expand(load_study(ROOT / "studies/quickstart.yaml"))
    store = Store(tmp_path / "r.duckdb")
    store.register_study("s", "s.yaml", 2, "grid", {}, [base.key, erl.key])
    done = fake_output(base.key)
    done.result.update(host="box", node_id=NODE)
    store.ingest(base, "s", done, "/r/b", {})
    store.mark_failed(erl, "s", explain(RAY_NODE_LOST, "box", NODE), "/r/e", "box", NODE)
    lines = study_lines(store, "s", 2, "grid", store.query("SELECT now() AS t").t[0], live=False)
    assert "1/2 completed, 1 failed, 0 pending" in lines[0]
    assert lines[1] == "  ran on: host box, Ray node 81f5dc406e3c (2 trials)"  # the failed one too
    assert lines[2].startswith(f"  failed {erl.key[:12]} synthetic/erl: node lost: the Ray node running this trial "
                               "(host box, Ray node 81f5dc406e3c) stopped responding")
    verbose = study_lines(store, "s", 2, "grid", store.query("SELECT now() AS t").t[0], live=False, verbose=True)
    assert RAW_SEPARATOR.strip() in "\n".join(verbose) and "RpcError" in verbose[-1]

    # redefined (e.g. --set): base leaves the study, prl joins; a traceback failure gets its node appended
    store.register_study("s", "s.yaml", 2, "grid", {}, [erl.key, prl.key])
    store.mark_failed(erl, "s", TRIAL_RAISED, "/r/e", "box", NODE)
    lines = study_lines(store, "s", 2, "grid", store.query("SELECT now() AS t").t[0], live=False)
    assert "0/2 completed, 1 failed, 1 pending" in lines[0]
    assert lines[1] == ("  1 earlier trial of this study lies outside its current definition (changed since they "
                        "ran): kept, not counted above")
    assert lines[-1] == (f"  failed {erl.key[:12]} synthetic/erl: ValueError: the node died of boredom "
                         "[on host box, Ray node 81f5dc406e3c]")


def test_status_of_a_search_never_reads_more_completed_than_planned(tmp_path, fake_output):
    base, erl, _ = expand(load_study(ROOT / "studies/quickstart.yaml"))
    store = Store(tmp_path / "r.duckdb")
    store.register_study("tpe", "t.yaml", 1, "optuna", {}, [])  # the budget was lowered to 1 sample
    for spec in (base, erl):
        store.ingest(spec, "tpe", fake_output(spec.key), "/r", {})
    (line,) = study_lines(store, "tpe", 1, "optuna", store.query("SELECT now() AS t").t[0], live=False)
    assert "1/1 completed (+1 beyond the search budget), 0 failed, 0 pending" in line

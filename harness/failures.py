"""Trial failures in words: a lost Ray node or a dead worker process said plainly, Ray's raw text kept below.

A stored error reads ``<our explanation>`` + RAW_SEPARATOR + ``<Ray's own text>``; `headline` gives the
one line that `harness status`, the run summary and the report show (the explanation's last line, or
the last line of a plain traceback: the exception).
"""

from __future__ import annotations

import re

RAW_SEPARATOR = "\n\nRay's own error text:\n"

# What Ray 2.60 says when the actor running a trial can no longer be reached: its raylet or machine went
# away ("The actor … is unavailable: … RpcError … may or may not have been executed on the actor"), or
# the GCS has already marked the node dead (ActorDiedError / NodeDiedError naming the node).
_NODE_LOST = re.compile(
    r"is unavailable:.*RpcError|ActorUnavailableError|NodeDiedError|node .{0,80}(died|dead|was terminated)"
    r"|the actor's node|raylet .{0,40}(died|terminated)", re.IGNORECASE | re.DOTALL)
_WORKER_DIED = re.compile(r"The actor died unexpectedly|ActorDiedError|worker .{0,40}(died|killed|exited)",
                          re.IGNORECASE | re.DOTALL)


def headline(error: str | None, limit: int = 300) -> str:
    """One line for a stored error: the explanation's last line, or a traceback's last (the exception)."""
    if not isinstance(error, str) or not error.strip():
        return ""
    text = error.split(RAW_SEPARATOR, 1)[0]
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    line = lines[-1] if lines else text.strip()
    return line if len(line) <= limit else line[: limit - 1] + "…"


def where_text(host: str | None, node_id: str | None) -> str:
    """'host h, Ray node 81f5dc406e3c' (either part left out when unknown)."""
    parts = [f"host {host}" if host else "", f"Ray node {node_id[:12]}" if node_id else ""]
    return ", ".join(p for p in parts if p) or "an unknown node"


def classify(raw: str, node_alive: bool | None = None) -> str | None:
    """'node lost', 'worker died' or None (the trial's own error, or one we do not recognise)."""
    if "RayTaskError" in raw:  # the trial's own code raised: its traceback says it all
        return None
    if _NODE_LOST.search(raw) or (node_alive is False and _WORKER_DIED.search(raw)):
        return "node lost"
    return "worker died" if _WORKER_DIED.search(raw) else None


def explain(raw: str, host: str | None = None, node_id: str | None = None, attempts: int = 1,
            node_alive: bool | None = None) -> str:
    """The stored error of a failed trial: Ray's raw text, prefixed with a plain explanation when Ray
    lost the node or the worker process that ran it (``node_alive``: what Ray says of that node now)."""
    kind = classify(raw, node_alive)
    where = where_text(host, node_id)
    tries = f"{attempts} attempt{'s' if attempts != 1 else ''}"
    if kind == "node lost":
        head = (f"node lost: the Ray node running this trial ({where}) stopped responding (its raylet was "
                f"killed or crashed, or its machine went away); {tries}, no retry left. Re-run the study to "
                "run the trial again, or pass --retries N to retry it on a surviving node.")
    elif kind == "worker died":
        head = (f"worker died: the process running this trial on {where} ended without an error from the "
                f"trial (killed, out of memory or crashed); {tries}, no retry left. Re-run the study to run "
                "the trial again.")
    else:
        return raw
    return head + RAW_SEPARATOR + raw

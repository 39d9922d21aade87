"""Optuna searches resume from the database: each search group's completed and interrupted samples.

Each search group (dataset x backbone x method entry x seed) is one Optuna study driven by Ray Tune through
`harness.searchers.ResumableSearch`, a Tune `Searcher` that asks and tells Optuna directly. A rerun resumes
from the database, not from Tune's experiment checkpoint: in Ray 2.60 `OptunaSearch.restore` needs
`Tuner.restore` of the same experiment directory and gives back the pickled Optuna study as of the last
periodic checkpoint (completions after it are lost on a kill -9), and `Searcher.add_evaluated_trials` drops
every trial whose last result lacks the metric, failed ones included (its `Trial.TERMINATED and` guard is a
constant). Each `harness run` is a fresh Tune run instead, and here:

- the study's completed samples of the group are added to the Optuna study as COMPLETE trials with their
  best validation value, so TPE models them (and its random start-up counts them);
- they count against the budget (`SearchGroup.budget`: num_samples, or the size of a smaller discrete
  space), and a suggestion whose trial key is already completed or issued is never run: it is told FAIL
  (TPE ignores those) and another is drawn, walking a discrete space in order when draws keep repeating;
- a sample left `running` by a killed driver is enqueued first and so re-run with the same configuration;
  one that no longer fits (the budget is spent, or the space changed) is marked `abandoned`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from rearec.config import METRICS

from .expand import SearchGroup
from .study import Study


@dataclass
class History:
    """What the database holds for one search group of a study."""

    done: dict[str, tuple[dict, float | None]] = field(default_factory=dict)  # key -> (point, best valid value)
    interrupted: list[tuple[str, dict]] = field(default_factory=list)  # (key, point) left 'running', oldest first

    def rerun(self, budget: int) -> list[tuple[str, dict]]:
        """The interrupted samples this run re-runs: as many as the budget has room for."""
        return self.interrupted[:max(0, budget - len(self.done))]


def study_samples(store, study: Study) -> list[tuple[str, dict, str, float | None]]:
    """(key, flat params, status, best validation value) of the study's completed and running trials.

    The value is the final validation metric; a trial ASHA stopped has none, so its best epoch stands in
    (what Tune reported to the searcher when it ran)."""
    metric = study.selection.name
    if metric not in METRICS:  # pragma: no cover - Selection validates it
        raise ValueError(metric)
    column = "valid_" + metric.replace("@", "_")
    frame = store.query(
        "SELECT t.trial_key, t.params, t.status, coalesce("
        "  (SELECT max(m.value) FROM metrics m WHERE m.trial_key = t.trial_key AND m.split = 'valid'"
        "     AND m.step IS NULL AND m.user_group = 'all' AND m.metric = ?),"
        f" (SELECT max(e.{column}) FROM epochs e WHERE e.trial_key = t.trial_key)) AS value "
        "FROM trials t JOIN study_trials s USING (trial_key) "
        "WHERE s.study = ? AND t.status IN ('completed', 'running') ORDER BY t.started_at NULLS LAST, t.trial_key",
        [metric, study.name])
    return [(k, json.loads(p), s, None if v != v or v is None else float(v))
            for k, p, s, v in zip(frame["trial_key"], frame["params"], frame["status"], frame["value"], strict=True)]


def histories(samples: list[tuple[str, dict, str, float | None]], groups: list[SearchGroup]
              ) -> tuple[dict[str, History], list[str]]:
    """Each group's History (by group id), and the study's running trials that lie in no group."""
    out = {group.id: History() for group in groups}
    placed: set[str] = set()
    for key, params, status, value in samples:
        for group in groups:
            point = group.contains(params)
            if point is None or params.get("dataset_hash") != group.dataset.content_hash:
                continue
            if status == "completed":
                out[group.id].done[key] = (point, value)
            else:
                out[group.id].interrupted.append((key, point))
            placed.add(key)
            break
    stray = [key for key, _, status, _ in samples if status == "running" and key not in placed]
    return out, stray


def abandon_reasons(plan_groups: list[SearchGroup], history: dict[str, History], stray: list[str],
                    num_samples: int) -> dict[str, str]:
    """trial key -> why it is abandoned: interrupted samples that no run of this study will re-run."""
    why = {}
    for group in plan_groups:
        h = history[group.id]
        budget = group.budget(num_samples)
        for key, _ in h.interrupted[len(h.rerun(budget)):]:
            why[key] = (f"abandoned: interrupted when its driver stopped, and not re-run: the Optuna search "
                        f"{group.label} has {len(h.done)} completed samples of its budget of {budget}")
    for key in stray:
        why[key] = ("abandoned: interrupted when its driver stopped, and not re-run: it lies outside the study's "
                    "current search space")
    return why

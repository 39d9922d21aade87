"""Results as pandas frames: ``harness.results.open("results.duckdb").frame(study="quickstart")``.

One row per trial with its descriptive columns, ``config/<setting>`` columns (every resolved setting,
nested ones flattened with "/") and one column per metric (``test/ndcg@20``, ...), as Ray Tune's
``ResultGrid.get_dataframe()`` gives its users; ``epochs(study)`` is the per-epoch log. The database is
opened read-only, one short connection per call, so this works while `harness run` writes to it (a
call waits up to ``timeout`` seconds for the run's current transaction).

Conventions (the store's): ``step=None`` is the method's own output (ERL: mean of the steps; others: the
last step), ``step=k`` reasoning step k; ``user_group="all"`` is the whole split, ``user:UG0``..``UG3``
and ``item:IG0``..``IG3`` the subgroups. Test metrics are measured once, at the epoch chosen on
validation; pick configurations on ``valid/`` columns only.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from .errors import HarnessError
from .store import DEFAULT_DB, Store

SPLITS = ("valid", "test")
# Descriptive trial columns first in `frame()` (the rest of the `trials` table follows them).
LEAD = ["trial_key", "dataset", "backbone", "method", "variant", "reasoning_steps", "seed", "status", "pruned",
        "best_epoch", "epochs", "wall_seconds"]
JSON_COLUMNS = ("params", "env")


def open(db: str | Path = DEFAULT_DB, timeout: float = 30.0) -> Results:  # noqa: A001 - the documented API
    """The results database at ``db``, read-only (raises HarnessError when it does not exist)."""
    return Results(db, timeout)


def flatten(values: Mapping[str, Any], prefix: str = "config/") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"config/a/b": 1}: nested settings as flat columns (Ray Tune's convention)."""
    out: dict[str, Any] = {}
    for name, value in values.items():
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, f"{prefix}{name}/"))
        else:
            out[f"{prefix}{name}"] = value
    return out


class Results:
    """Read-only frames over one results database (see the module docstring)."""

    def __init__(self, db: str | Path = DEFAULT_DB, timeout: float = 30.0):
        self.db = Path(db)
        self.store = Store(self.db, read_only=True, timeout=timeout)

    def sql(self, query: str, params: list | None = None) -> pd.DataFrame:
        """Any read-only query, as a frame."""
        return self.store.query(query, params)

    def studies(self) -> pd.DataFrame:
        """One row per study: its file, search algorithm, planned count, linked and completed trials."""
        return self.sql(
            "SELECT s.study, s.file, s.algorithm, s.planned, count(st.trial_key) AS trials, "
            "count(*) FILTER (WHERE t.status = 'completed') AS completed, s.updated_at FROM studies s "
            "LEFT JOIN study_trials st USING (study) LEFT JOIN trials t USING (trial_key) GROUP BY ALL ORDER BY 1")

    def check_study(self, study: str) -> None:
        """Raise a HarnessError naming the known studies when ``study`` is not in the database."""
        known = sorted(set(self.sql("SELECT study FROM studies UNION SELECT study FROM study_trials")["study"]))
        if study not in known:
            raise HarnessError(f"{self.db}: no study named {study!r} (known: {', '.join(known) or 'none yet'})")

    def membership_columns(self) -> str:
        """", s.col, ..." for the `study_trials` columns beyond the link itself (e.g. in_definition)."""
        names = self.sql("SELECT column_name FROM information_schema.columns WHERE table_name = 'study_trials' "
                         "AND column_name NOT IN ('study', 'trial_key') ORDER BY ordinal_position")["column_name"]
        return "".join(f", s.{name}" for name in names)

    def _members(self, study: str | None) -> tuple[str, list]:
        """(FROM clause over `trials t` restricted to the study, its parameters)."""
        if study is None:
            return "trials t", []
        self.check_study(study)
        return "study_trials s JOIN trials t USING (trial_key)", [study]

    def trials(self, study: str | None = None) -> pd.DataFrame:
        """One row per trial (of ``study``, or all): the `trials` table, params and env parsed to dicts."""
        source, params = self._members(study)
        extra = self.membership_columns() if study else ""
        frame = self.sql(f"SELECT t.*{extra} FROM {source} {'WHERE s.study = ?' if study else ''} "
                         "ORDER BY t.dataset, t.backbone, t.method, t.reasoning_steps, t.seed, t.trial_key", params)
        for column in JSON_COLUMNS:
            if column in frame:
                frame[column] = [json.loads(v) if isinstance(v, str) else v for v in frame[column]]
        return frame

    def metrics(self, study: str | None = None, split: str | Iterable[str] | None = None) -> pd.DataFrame:
        """The long `metrics` table of the trials (trial_key, split, step, user_group, metric, value)."""
        splits = _splits(split)
        source, params = self._members(study)
        where = ["m.split IN (SELECT unnest(?))"] + (["s.study = ?"] if study else [])
        return self.sql(f"SELECT m.* FROM {source} JOIN metrics m USING (trial_key) WHERE {' AND '.join(where)} "
                        "ORDER BY m.trial_key, m.split, m.step NULLS FIRST, m.user_group, m.metric",
                        [list(splits), *params])

    def frame(self, study: str | None = None, split: str | Iterable[str] = SPLITS, step: int | None = None,
              user_group: str = "all", config: bool = True) -> pd.DataFrame:
        """One row per trial: descriptive columns, a ``<split>/<metric>`` column per metric of ``split`` (one
        or several of valid / test) at ``step`` and ``user_group``, the other `trials` columns, then the
        ``config/*`` settings (unless ``config=False``). Trials without such metrics (failed, pruned,
        running) have NaN there; ``status`` and ``pruned`` say why."""
        splits = _splits(split)
        trials = self.trials(study)
        metrics = self.metrics(study, splits)
        chosen = metrics[(metrics["user_group"] == user_group)
                         & (metrics["step"].isna() if step is None else metrics["step"] == step)]
        order = [f"{s}/{m}" for s in splits for m in sorted(set(chosen["metric"]), key=_metric_order)]
        wide = pd.DataFrame(index=pd.Index([], name="trial_key"))
        if len(chosen):
            wide = chosen.assign(column=chosen["split"] + "/" + chosen["metric"]).pivot_table(
                index="trial_key", columns="column", values="value", aggfunc="first").reindex(columns=order)
        lead = [c for c in LEAD if c in trials]
        rest = [c for c in trials if c not in LEAD and c not in JSON_COLUMNS]
        parts = [trials[lead].join(wide, on="trial_key"), trials[rest]]  # metrics right after the lead columns
        if config:
            parts.append(pd.DataFrame([flatten(p) if isinstance(p, Mapping) else {} for p in trials["params"]],
                                      index=trials.index))
        out = pd.concat(parts, axis=1)
        out.columns.name = None
        return out.reset_index(drop=True)

    def epochs(self, study: str | None = None) -> pd.DataFrame:
        """One row per trial and epoch: the trial's dataset / backbone / method / variant / K / seed, then
        train_loss, the validation metrics of that epoch, seconds and is_best (the epoch test was run at)."""
        source, params = self._members(study)
        return self.sql(
            "SELECT e.trial_key, t.dataset, t.backbone, t.method, t.variant, t.reasoning_steps, t.seed, "
            f"e.* EXCLUDE (trial_key) FROM {source} JOIN epochs e USING (trial_key) "
            f"{'WHERE s.study = ?' if study else ''} ORDER BY t.dataset, t.backbone, t.method, "
            "t.reasoning_steps, t.seed, e.trial_key, e.epoch", params)

    def sample_ranks(self, study: str | None = None, split: str | Iterable[str] = SPLITS) -> pd.DataFrame:
        """Per evaluation sample: the target's rank (1 = top) per step (NULL step = the method's output)."""
        source, params = self._members(study)
        where = ["r.split IN (SELECT unnest(?))"] + (["s.study = ?"] if study else [])
        return self.sql(f"SELECT r.* FROM {source} JOIN sample_ranks r USING (trial_key) WHERE {' AND '.join(where)} "
                        "ORDER BY r.trial_key, r.split, r.step NULLS FIRST, r.sample", [list(_splits(split)), *params])


def _splits(split: str | Iterable[str] | None) -> tuple[str, ...]:
    splits = SPLITS if split is None else (split,) if isinstance(split, str) else tuple(split)
    unknown = [s for s in splits if s not in SPLITS]
    if unknown or not splits:
        raise HarnessError(f"split: {', '.join(map(repr, unknown)) or 'nothing'} given; choose from valid, test")
    return splits


def _metric_order(metric: str) -> tuple[str, int]:
    name, _, k = metric.partition("@")
    return name, int(k) if k.isdigit() else 0

"""The harness's Ray Tune Searchers: a grid study's trial list, and one Optuna search group's TPE.

`TrialList` hands Tune a grid study's trials one by one. Tune's own `grid_search` deep-copies the unresolved
search space, the whole list of trials, for every trial it creates (Ray 2.60, variant_generator.py), so a
study's scheduling time grew with the square of its size (1,000 tiny trials waited minutes for the first to
start); a Searcher is asked for one configuration at a time and Tune copies only that.

`ResumableSearch` is one Optuna search group: TPE warm-started from the database, a budget, no configuration
twice (harness/search.py says what resuming a search means). Imported only where Ray runs.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ray.tune.search import Searcher

from .expand import Choice, SearchGroup, resolve_point
from .search import History

DRAWS = 32  # suggestions in a row that may repeat known configurations before a discrete space is walked


def distribution(dim):
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if isinstance(dim, Choice):
        return CategoricalDistribution(list(dict.fromkeys(dim.values)))
    if dim.integer:  # both ends included, as in the study file
        return IntDistribution(int(dim.low), int(dim.high), log=dim.log)
    return FloatDistribution(dim.low, dim.high, log=dim.log)


def _walk(group: SearchGroup) -> Iterator[dict]:
    """Every configuration of a discrete space, in declaration order."""
    names = list(group.space)
    values = [list(dict.fromkeys(d.values)) if isinstance(d, Choice) else range(int(d.low), int(d.high) + 1)
              for d in group.space.values()]
    for combo in itertools.product(*values):
        yield dict(zip(names, combo, strict=True))


class TrialList(Searcher):
    """A grid study's trials, in plan order, as Tune asks for them (``num_samples`` = their number)."""

    def __init__(self, trials: list[dict]):
        super().__init__()
        self.trials, self.next = trials, 0

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True  # the trials are fixed; Tune's param_space carries constants only

    def suggest(self, trial_id: str):
        if self.next >= len(self.trials):
            return self.FINISHED
        self.next += 1
        return {"trial": self.trials[self.next - 1]}

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        pass  # nothing to learn: every trial of the list runs

    def save(self, checkpoint_path: str) -> None:
        Path(checkpoint_path).write_text(json.dumps({"next": self.next, "trials": len(self.trials)}))


class ResumableSearch(Searcher):
    """A Tune Searcher over one group: Optuna TPE, warm-started from ``history``, ``budget`` samples in all."""

    def __init__(self, group: SearchGroup, metric: str, selection: str, history: History, budget: int, seed: int,
                 out: Callable[[str], None] = print):
        import optuna
        from optuna.trial import create_trial

        super().__init__(metric=metric, mode="max")
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.group, self.out = group, out
        self.config = group.to_config(selection)
        self.space = {name: distribution(dim) for name, dim in group.space.items()}
        self.optuna = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
        self.known = set(history.done)  # completed keys: never suggested again
        for point, value in history.done.values():
            if value is not None:
                self.optuna.add_trial(create_trial(params=point, distributions=self.space, value=value))
        self.left = max(0, budget - len(history.done))  # suggestions still to hand out
        for _, point in history.rerun(budget):
            self.optuna.enqueue_trial(point)  # the next asks return these first: re-run as they were
        self.issued: set[str] = set()
        self.live: dict[str, Any] = {}  # Tune trial id -> Optuna trial
        self.repeats = 0  # suggestions dropped because their configuration was known or issued

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True  # the space is the group's own; Tune's param_space carries constants only

    def save(self, checkpoint_path: str) -> None:
        """Tune's periodic experiment checkpoint: what was handed out (a rerun resumes from the database,
        never from this file, so there is no restore)."""
        Path(checkpoint_path).write_text(json.dumps({"group": self.group.id, "left": self.left,
                                                     "issued": sorted(self.issued), "known": sorted(self.known)}))

    def _key(self, point: dict) -> str:
        try:
            return resolve_point(self.config, point).key
        except ValueError as exc:  # an invalid combination (ConfigError): the trial fails with it, as before
            return f"invalid {json.dumps(point, sort_keys=True, default=str)}: {exc}"

    def _fresh(self):
        """The next Optuna trial whose configuration is neither completed nor issued, or None."""
        from optuna.trial import TrialState

        for _ in range(DRAWS):
            trial = self.optuna.ask(self.space)
            key = self._key(trial.params)
            if key not in self.known and key not in self.issued:
                self.issued.add(key)
                return trial
            self.optuna.tell(trial, state=TrialState.FAIL)  # TPE skips it; its value is in the study already
            self.repeats += 1
        if self.group.cardinality is None:
            return None
        for point in _walk(self.group):  # a small discrete space: the first configuration not seen yet
            key = self._key(point)
            if key not in self.known and key not in self.issued:
                self.optuna.enqueue_trial(point)
                self.issued.add(key)
                return self.optuna.ask(self.space)
        return None

    def suggest(self, trial_id: str):
        if self.left <= 0:
            return self.FINISHED
        trial = self._fresh()
        if trial is None:
            self.out(f"optuna search {self.group.label}: no new configuration after {DRAWS} draws; stopping with "
                     f"{self.left} of its budget unused")
            self.left = 0
            return self.FINISHED
        self.left -= 1
        self.live[trial_id] = trial
        return {"params": dict(trial.params)}

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        from optuna.trial import TrialState

        trial = self.live.pop(trial_id, None)
        if trial is None:
            return
        value = (result or {}).get(self.metric)
        if error or value is None or value != value:
            self.optuna.tell(trial, state=TrialState.FAIL)
        else:
            self.optuna.tell(trial, float(value))
            self.known.add(self._key(trial.params))

"""Render the report's figures in a child process, so they run beside the SQL instead of under one GIL.

Why a process: matplotlib holds the GIL for most of a figure, so a figure thread and the sections' pandas
code take turns on one core; a child process renders on the second core (bench/README.md, "Report").
Why not multiprocessing: its spawn / forkserver children re-import the caller's ``__main__`` (an unguarded
script that calls build_report would run again in the child), and fork copies a process whose DuckDB
threads may hold locks. The child here is ``python -m harness.report.figure_process``: it imports only
figures.py, reads jobs from stdin and answers on stdout, one pickle each way per job.

Job: (number, module, function, args, kwargs) -- a figure function of this package and its frames.
Answer: (number, None) when the PNG is written, or (number, the traceback as text).
"""

from __future__ import annotations

import importlib
import os
import pickle
import subprocess
import sys
import threading
import traceback
from concurrent.futures import Future
from pathlib import Path

PACKAGE = "harness.report."


class FigureError(RuntimeError):
    """A figure failed in the child process; the message carries its traceback."""


class FigureProcess:
    """Executor-like (``submit`` -> Future, context manager) rendering figure functions in one child.

    Jobs run in submission order. If the child cannot start or dies, every unfinished future fails with
    FigureError (the report then fails, naming the figure), never silently without its PNG."""

    def __init__(self) -> None:
        root = str(Path(__file__).resolve().parents[2])  # the folder holding the harness package
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
        env.setdefault("MPLBACKEND", "Agg")
        self._proc = subprocess.Popen([sys.executable, "-m", "harness.report.figure_process"], env=env,
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE)  # stderr: the caller's
        self._futures: dict[int, tuple[str, Future]] = {}
        self._lock = threading.Lock()
        self._next = 0
        self._reader = threading.Thread(target=self._read, name="figure-replies", daemon=True)
        self._reader.start()

    def submit(self, render, *args, **kwargs) -> Future:
        if not render.__module__.startswith(PACKAGE):
            raise ValueError(f"figure function {render.__qualname__}: must live in {PACKAGE}*")
        future: Future = Future()
        with self._lock:
            number = self._next
            self._next += 1
        # pickled whole before anything is written: a frame that cannot be pickled raises here and leaves
        # the stream to the child intact
        job = pickle.dumps((number, render.__module__, render.__qualname__, args, kwargs),
                           protocol=pickle.HIGHEST_PROTOCOL)
        with self._lock:
            self._futures[number] = (render.__name__, future)
        try:
            self._proc.stdin.write(job)
            self._proc.stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            self._fail(f"the figure process is gone ({exc})")
        return future

    def _read(self) -> None:
        out = self._proc.stdout
        while True:
            try:
                number, error = pickle.load(out)
            except (EOFError, OSError, pickle.UnpicklingError):
                break
            with self._lock:
                name, future = self._futures.pop(number)
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(FigureError(f"figure {name} failed in the figure process:\n{error}"))
        self._fail(f"the figure process exited with code {self._proc.wait()}")

    def _fail(self, why: str) -> None:
        with self._lock:
            pending, self._futures = list(self._futures.values()), {}
        for name, future in pending:
            if not future.done():
                future.set_exception(FigureError(f"figure {name}: not rendered: {why}"))

    def close(self, kill: bool = False) -> None:
        if kill:
            self._proc.kill()
        try:
            self._proc.stdin.close()  # end of jobs: the child finishes what it has and exits
        except OSError:
            pass
        self._reader.join()
        self._proc.wait()

    def __enter__(self) -> FigureProcess:
        return self

    def __exit__(self, kind, value, tb) -> None:
        self.close(kill=kind is not None)


def _serve() -> None:
    """The child: answer every job until stdin closes."""
    jobs = sys.stdin.buffer
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything a library prints goes to stderr, never into the answer stream
    while True:
        try:
            number, module, name, args, kwargs = pickle.load(jobs)
        except EOFError:
            return
        try:
            if not module.startswith(PACKAGE):
                raise ValueError(f"{module}: not a report module")
            getattr(importlib.import_module(module), name)(*args, **kwargs)
            error = None
        except BaseException:  # noqa: BLE001 -- every failure goes back to the parent, which raises it
            error = traceback.format_exc()
        pickle.dump((number, error), answers, protocol=pickle.HIGHEST_PROTOCOL)
        answers.flush()


if __name__ == "__main__":
    importlib.import_module(PACKAGE + "figures")  # imported while the parent runs its first queries
    _serve()

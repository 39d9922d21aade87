"""`harness tensorboard`: TensorBoard on one study's trials, each run named by what the trial is.

TensorBoard names a run by its directory relative to --logdir, and the trial directories are
`<runs>/<study>/<key[:12]>/` (names resume relies on). So each invocation builds its own logdir of
symlinks, `<readable name> -> <trial dir>` (TensorBoard's own advice over --logdir_spec, whose ',' and
':' are special), from the `trial.json` every trial writes when it starts: only the study's directories,
so only the study's trials (its own and those it shares with another study, linked there by the runner).
The tree is refreshed while TensorBoard runs, so trials that start later appear.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from .errors import HarnessError
from .keys import TrialSpec
from .names import study_names

REFRESH_SECONDS = 15.0


def _trial_params(directory: Path) -> tuple[str, dict] | None:
    """(key, flat params) from a trial directory's trial.json; None for anything else in the folder."""
    try:
        data = json.loads((directory / "trial.json").read_text(encoding="utf-8"))
        fields = {k: data[k] for k in ("key", "dataset", "dataset_spec", "dataset_hash", "model", "method", "train")}
        return fields["key"], TrialSpec(**fields).params()
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def study_runs(runs: str | Path, study: str) -> dict[str, Path]:
    """readable run name -> trial directory, for every trial directory of ``study`` under ``runs``."""
    study_dir = Path(runs) / study
    if not study_dir.is_dir():
        raise HarnessError(f"{study_dir}: no such directory (run the study first, or pass --runs)")
    trials: dict[str, dict] = {}
    dirs: dict[str, Path] = {}
    for directory in sorted(study_dir.iterdir()):
        if directory.name.startswith((".", "_")) or not directory.is_dir():
            continue
        found = _trial_params(directory)
        if found is not None:
            key, params = found
            trials[key], dirs[key] = params, directory
    return {name: dirs[key] for key, name in study_names(trials).items()}


def build_logdir(named: dict[str, Path], logdir: str | Path) -> Path:
    """Make ``logdir`` hold exactly one symlink per run (added, renamed or removed as ``named`` says)."""
    logdir = Path(logdir)
    logdir.mkdir(parents=True, exist_ok=True)
    wanted = {name: str(path.resolve()) for name, path in named.items()}
    for entry in logdir.iterdir():
        if entry.name in wanted and entry.is_symlink() and os.readlink(entry) == wanted[entry.name]:
            continue
        if entry.is_symlink() or not entry.is_dir():
            entry.unlink()
        else:
            shutil.rmtree(entry)
    for name, target in wanted.items():
        link = logdir / name
        if not link.is_symlink():
            link.symlink_to(target, target_is_directory=True)
    return logdir


def serve(runs: str | Path, study: str, port: int, out=print) -> int:
    """Run TensorBoard on 127.0.0.1:``port`` until it exits or Ctrl-C; the symlink tree is removed after."""
    named = study_runs(runs, study)
    previous = signal.signal(signal.SIGTERM, _terminate)  # so `finally` removes the tree and TensorBoard
    logdir = Path(tempfile.mkdtemp(prefix=f"harness-tensorboard-{study}-"))
    try:
        build_logdir(named, logdir)
        out(f"TensorBoard for study {study} ({len(named)} trials in {Path(runs) / study}) at "
            f"http://127.0.0.1:{port}/  (Ctrl-C to stop)")
        binary = Path(sys.executable).with_name("tensorboard")
        command = [str(binary) if binary.exists() else "tensorboard", "--logdir", str(logdir),
                   "--host", "127.0.0.1", "--port", str(port)]
        board = subprocess.Popen(command)
        try:
            while True:
                try:
                    return board.wait(timeout=REFRESH_SECONDS)
                except subprocess.TimeoutExpired:
                    build_logdir(study_runs(runs, study), logdir)
        except KeyboardInterrupt:
            board.terminate()
            board.wait(timeout=30)
            return 0
        finally:
            if board.poll() is None:  # e.g. SIGTERM to this process: do not leave TensorBoard behind
                board.terminate()
                board.wait(timeout=30)
    finally:
        shutil.rmtree(logdir, ignore_errors=True)
        signal.signal(signal.SIGTERM, previous)


def _terminate(signum, frame):
    raise SystemExit(128 + signum)

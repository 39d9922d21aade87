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
    """Run TensorBoard on 127.0.0.1:``port`` until it exits, Ctrl-C or SIGTERM; the symlink tree is removed after.

    SIGTERM only records itself and stops TensorBoard (if started): raising from the handler could land
    inside ``subprocess.Popen`` after TensorBoard was exec'd but before ``Popen`` returned, leaving an
    orphan that nobody terminates (seen in CI under load).
    """
    named = study_runs(runs, study)
    board: list[subprocess.Popen] = []   # the TensorBoard process, once started
    terminated: list[int] = []           # signal numbers received

    def on_sigterm(signum, frame):
        terminated.append(signum)
        if board:
            board[0].terminate()

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    logdir = Path(tempfile.mkdtemp(prefix=f"harness-tensorboard-{study}-"))
    try:
        build_logdir(named, logdir)
        out(f"TensorBoard for study {study} ({len(named)} trials in {Path(runs) / study}) at "
            f"http://127.0.0.1:{port}/  (Ctrl-C to stop)")
        binary = Path(sys.executable).with_name("tensorboard")
        command = [str(binary) if binary.exists() else "tensorboard", "--logdir", str(logdir),
                   "--host", "127.0.0.1", "--port", str(port)]
        if terminated:
            return 128 + terminated[0]
        board.append(subprocess.Popen(command))
        if terminated:  # the signal came while Popen ran: the handler did not see the process yet
            board[0].terminate()
        try:
            while True:
                try:
                    code = board[0].wait(timeout=REFRESH_SECONDS)
                    return 128 + terminated[0] if terminated else code
                except subprocess.TimeoutExpired:
                    if not terminated:
                        build_logdir(study_runs(runs, study), logdir)
        except KeyboardInterrupt:
            return 0
        finally:
            _stop(board[0])
    finally:
        shutil.rmtree(logdir, ignore_errors=True)
        signal.signal(signal.SIGTERM, previous)


def _stop(process: subprocess.Popen) -> None:
    """Terminate ``process`` if it still runs; kill it if it has not exited 30 s later."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

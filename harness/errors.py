"""Harness exceptions: each maps to a CLI exit code and reads `file: key.path: problem`."""

from __future__ import annotations

from rearec.errors import ConfigError

# Exit codes of the `harness` CLI (documented in `harness --help` and the README).
EXIT_OK = 0
EXIT_TRIALS_FAILED = 1  # the run finished but at least one trial failed
EXIT_USAGE = 2  # bad arguments, bad study file, bad SQL, not implemented
EXIT_ENVIRONMENT = 3  # database busy, no GPU for --device cuda, Ray could not start
EXIT_INTERNAL = 4  # a bug: an unexpected exception (traceback printed)
EXIT_DATA_MISSING = 5  # `harness plan`: a built-in dataset's raw files are not there yet (count printed anyway)
EXIT_INTERRUPTED = 130


class HarnessError(Exception):
    """Base class; ``exit_code`` is what the CLI returns."""

    exit_code = EXIT_USAGE


class StudyError(HarnessError, ValueError):
    """A study file (or a --set override) is invalid. Message: ``file: key.path: problem``."""

    def __init__(self, file: str, path: str, problem: str):
        self.file, self.path, self.problem = str(file), path, problem
        super().__init__(": ".join(part for part in (self.file, path, problem) if part))

    @classmethod
    def from_config_error(cls, file: str, exc: ConfigError, prefix: str = "") -> StudyError:
        return cls(file, exc.prefixed(prefix).path, exc.problem)


class StoreBusyError(HarnessError):
    """Another process holds the results database."""

    exit_code = EXIT_ENVIRONMENT


class ResourceError(HarnessError):
    """The cluster cannot satisfy what a study asks for (it would otherwise hang with trials pending)."""

    exit_code = EXIT_ENVIRONMENT

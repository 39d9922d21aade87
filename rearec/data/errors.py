"""The data layer's exception: a raw or cached file is unusable, named with the file and the place."""

from __future__ import annotations

from pathlib import Path


class DataError(ValueError):
    """A data file is missing, malformed or empties out. Message: ``file: where: problem``.

    ``where`` is a column and/or line (``column 'timestamp', line 7``) or empty when the whole file is at
    fault; lines are 1-based physical lines of the file (the header of a CSV is line 1).
    """

    def __init__(self, file: str | Path, where: str, problem: str):
        self.file = str(file)
        self.where = where
        self.problem = problem
        super().__init__(": ".join(part for part in (self.file, where, problem) if part))

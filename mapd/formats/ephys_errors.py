"""The one error type of the processed-ephys readers (jrclust, kilosort, bitcode, spikeglx)."""

from __future__ import annotations

import os


class EphysFormatError(Exception):
    """A processed-ephys file or folder that cannot be read; the message names it and the problem."""

    def __init__(self, path: str | os.PathLike[str], problem: str, *, transient: bool = False) -> None:
        self.path = os.fspath(path)
        self.problem = problem
        # The file could not be read now (gone, locked, I/O error on a share): it may be later.
        self.transient = transient
        super().__init__(f"{self.path}: {problem}")

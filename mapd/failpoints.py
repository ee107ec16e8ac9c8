"""Named points where a test can have mapd killed (SIGKILL), to prove each step resumes without loss.

Set ``MAPD_FAILPOINT`` to a point's name: the process kills itself there, as
kill -9 or a power cut would. Unset (always, outside tests), a point costs
one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

FAILPOINT_ENV = "MAPD_FAILPOINT"


def reached(name: str) -> None:
    if os.environ.get(FAILPOINT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)

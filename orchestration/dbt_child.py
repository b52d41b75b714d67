"""``ie-dbt``: the dbt CLI, bound to the process that starts it.

dagster-dbt runs dbt as a child process; if the Dagster process is killed (SIGKILL,
the OOM killer) an ordinary child would keep running and keep the warehouse's write
lock. This entry point asks Linux to SIGKILL it when its parent dies
(``PR_SET_PDEATHSIG``, kept across ``exec``) and then execs the real ``dbt`` next to
the interpreter. Elsewhere it simply execs dbt.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from pathlib import Path

PR_SET_PDEATHSIG = 1


def bind_to_parent() -> None:
    """SIGKILL this process when its parent dies (Linux only)."""
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    # the parent died during start-up, before the request took effect: we were re-parented
    if parent == 1 or os.getppid() != parent:
        os._exit(1)


def main() -> None:
    bind_to_parent()
    dbt = str(Path(sys.executable).with_name("dbt"))
    os.execv(dbt, [dbt, *sys.argv[1:]])


if __name__ == "__main__":
    main()

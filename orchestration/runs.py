"""Runs left STARTED by a killed process are marked failed at the next run's start.

A process killed with SIGKILL cannot report its own failure, so its run would stay
STARTED in the Dagster history for ever. Every run records the PID (and the start
time of that process, so a reused PID is not taken for it) of the process executing
its steps in the run tag :data:`PID_TAG`; when the warehouse resource starts the
next run, any other STARTED run of this host whose process is gone is reported
failed. This works the same under ``dagster asset materialize`` (the CLI process runs
the steps) and ``dagster dev`` (a run worker per run). Under the multiprocess executor
a step's process ends before its run does, so the run is tagged with the process
that started the step (the run's orchestrator), not the step's own.
"""

from __future__ import annotations

import multiprocessing
import os
import socket
from collections.abc import Callable
from pathlib import Path

from dagster import DagsterInstance, DagsterRun, DagsterRunStatus, RunsFilter

PID_TAG = "interest_explorer/worker"  # "<host>:<pid>:<process start ticks>"


def _start_ticks(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux); None if it is gone or
    a zombie (killed, not yet reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # the name before ")" may hold spaces
    return None if fields[0] in ("Z", "X") else fields[19]  # state, start time (fields 3 and 22)


def _alive(pid: int, ticks: str) -> bool:
    if Path("/proc").is_dir():
        return _start_ticks(pid) == ticks
    try:  # no /proc: existence only
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def worker_tag() -> str:
    parent = multiprocessing.parent_process()  # set in a multiprocess executor's step process
    pid = parent.pid if parent is not None and parent.pid is not None else os.getpid()
    return f"{socket.gethostname()}:{pid}:{_start_ticks(pid) or ''}"


def record_worker(instance: DagsterInstance, run: DagsterRun) -> None:
    """Tag ``run`` with the process executing it (once)."""
    if PID_TAG not in (run.tags or {}):
        instance.add_run_tags(run.run_id, {PID_TAG: worker_tag()})


def fail_orphaned_runs(
    instance: DagsterInstance, current_run_id: str | None = None, log: Callable[[str], None] | None = None
) -> list[str]:
    """Report failed every STARTED run of this host (other than ``current_run_id``)
    whose recorded process no longer exists. Returns their run ids."""
    host = socket.gethostname()
    failed = []
    for record in instance.get_run_records(RunsFilter(statuses=[DagsterRunStatus.STARTED])):
        run = record.dagster_run
        tag = (run.tags or {}).get(PID_TAG)
        if run.run_id == current_run_id or not tag:
            continue
        tag_host, pid, ticks = tag.rsplit(":", 2)
        if tag_host != host or _alive(int(pid), ticks):
            continue
        message = (f"run {run.run_id} was left STARTED: its process {pid} is gone (killed?); "
                   "marked failed at the start of the next run")
        instance.report_run_failed(run, message=message)
        failed.append(run.run_id)
        if log is not None:
            log(message)
    return failed

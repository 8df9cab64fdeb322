"""Where a study's runs execute: Dask, on this machine or on an existing cluster.

`kdexam run --jobs N` starts a `LocalCluster` of N single-threaded worker processes; `--executor dask --scheduler
ADDRESS` connects to a running cluster instead (a `dask scheduler`, dask-jobqueue on SLURM/PBS, dask-kubernetes,
...). Both give a `distributed.Client` that the runner drives the same way: one task per run, submitted once the
runs it needs are done, results collected with `as_completed`. The notebooks execute in Jupyter kernels that the
workers start, so a worker thread mostly waits; the work, and the torch threads, are in the kernel.

A task gets plain values (paths, the parameters dict), never kd-exam's own objects, so a worker imports papermill
and not torch. On a cluster, every worker must see the study's output and data folders at the same paths (a shared
filesystem) and have kd-exam and the notebook's Jupyter kernel installed.
"""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kdlib import rundir
from kdlib.errors import KdExamError

if TYPE_CHECKING:
    from distributed import Client


@contextmanager
def client(jobs: int = 1, scheduler: str | None = None) -> Iterator[Client]:
    """A Dask client: on a new local cluster of `jobs` worker processes, or on the cluster at `scheduler`.

    `scheduler` is an address (tcp://host:8786) or a scheduler file (`dask scheduler --scheduler-file`).
    """
    from distributed import Client, LocalCluster

    if scheduler:
        where = {"scheduler_file": scheduler} if Path(scheduler).is_file() else {"address": scheduler}
        try:
            c = Client(**where, timeout="30s")
        except OSError as e:
            raise KdExamError(f"could not reach the Dask scheduler at {scheduler} ({e}); start one with "
                              "`dask scheduler` and workers with `dask worker ADDRESS`.") from None
        with c:
            yield c
        return
    # One thread per worker process: one notebook at a time per worker, and a crash stays in its process.
    with LocalCluster(n_workers=jobs, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
            Client(cluster) as c:
        yield c


def usable_cores() -> int:
    """Cores this process may run on (the affinity mask of a SLURM/cgroup allocation, not the whole machine)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def threads_per_run() -> int:
    """Inside a task: this host's cores shared evenly among the runs its Dask workers may run at once."""
    from distributed import get_client, get_worker

    worker = get_worker()
    workers = get_client().scheduler_info(n_workers=-1)["workers"].values()
    slots = sum(w["nthreads"] for w in workers if w["host"] == worker.ip) or worker.state.nthreads
    return max(1, usable_cores() // slots)


def announce(topic: str, message: dict) -> None:
    """Inside a task: tell the client (subscribed to `topic`) what this worker is doing."""
    from distributed import get_worker

    get_worker().log_event(topic, message)


@dataclass(frozen=True)
class Outcome:
    """What a run's task reports back; plain data, so it travels from a Dask worker to the client."""

    name: str
    status: str  # "done" or "failed"
    seconds: float = 0.0
    error: str = ""


class _DeclaredParameters(logging.Filter):
    """papermill warns of every parameter its notebook's `parameters` cell does not list; a cell lists only its
    demo's settings, and kdlib.runner has checked every parameter against the notebook's class."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Passed unknown parameter")


logging.getLogger("papermill").addFilter(_DeclaredParameters())


def execute_notebook(name: str, notebook: Path, out_dir: Path, parameters: dict[str, Any], kernel: str) -> None:
    """One papermill execution into `out_dir`; done.json is written only after the notebook finished without error.

    Papermill writes the executed notebook as it goes; an interrupted run leaves it, params.json and its training
    checkpoint, but never done.json, so it is redone (and resumes from its last epoch) next time.
    """
    import papermill

    out_dir.mkdir(parents=True, exist_ok=True)
    os.environ["KDEXAM_RUN"] = name  # the kernel inherits it: kdlib.notebook keeps progress bars out of the notebook
    rundir.write_json(out_dir / rundir.PARAMS, {"run": name, "notebook": notebook.name, "parameters": parameters})
    started = time.perf_counter()
    papermill.execute_notebook(str(notebook), str(out_dir / notebook.name), parameters=parameters,
                               cwd=str(out_dir), progress_bar=False, log_output=False, **_kernel_config(),
                               **kernel_arguments(kernel))
    rundir.mark_done(out_dir, run=name, seconds=round(time.perf_counter() - started, 1))


# "" (the default of `kdexam run --kernel`): the interpreter running kd-exam, whatever kernels Jupyter has installed
# (a `python3` kernel of another environment would lack kdlib, or run another version of it).
THIS_INTERPRETER = ""


def kernel_arguments(kernel: str) -> dict[str, Any]:
    """papermill's arguments for `kernel`: a named Jupyter kernel, or THIS_INTERPRETER's own ipykernel."""
    if kernel != THIS_INTERPRETER:
        return {"kernel_name": kernel}
    from jupyter_client import AsyncKernelManager
    from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
    from traitlets import default

    class ThisInterpreterSpecs(KernelSpecManager):
        def get_kernel_spec(self, kernel_name: str) -> KernelSpec:
            if kernel_name != THIS_INTERPRETER_KERNEL:
                return super().get_kernel_spec(kernel_name)
            from ipykernel.kernelspec import RESOURCES, get_kernel_dict

            return KernelSpec(resource_dir=RESOURCES, **get_kernel_dict())  # argv: sys.executable -m ipykernel

    class ThisInterpreterKernel(AsyncKernelManager):
        @default("kernel_spec_manager")
        def _kernel_spec_manager_default(self) -> KernelSpecManager:
            return ThisInterpreterSpecs(data_dir=self.data_dir)

    return {"kernel_name": THIS_INTERPRETER_KERNEL, "kernel_manager_class": ThisInterpreterKernel}


THIS_INTERPRETER_KERNEL = "kdexam-this-python"  # the name the executed notebooks record


def _kernel_config() -> dict[str, Any]:
    """CurveZMQ encryption between papermill and its kernel where pyzmq has it: ipykernel >= 7.3 warns on every start
    of an unencrypted TCP kernel, once per run in a study's output."""
    import zmq
    from jupyter_client import KernelManager
    from traitlets.config import Config

    if not (zmq.has("curve") and KernelManager.class_traits().get("transport_encryption")):
        return {}  # libzmq without CurveZMQ, or a jupyter_client before transport encryption: the default
    return {"config": Config({"KernelManager": {"transport_encryption": "auto"}})}


def notebook_task(name: str, notebook: Path, out_dir: Path, parameters: dict[str, Any], kernel: str,
                  topic: str) -> Outcome:
    """One run as a Dask task; an error is reported in the Outcome, never raised.

    `threads: 0` becomes this host's share of cores, so N runs at once on a host do not fight over its cores.
    """
    from distributed import get_worker
    from papermill.exceptions import PapermillExecutionError

    if parameters.get("threads") == 0:
        parameters = {**parameters, "threads": threads_per_run()}
    announce(topic, {"run": name, "worker": get_worker().address, "threads": parameters.get("threads", 0)})
    started = time.perf_counter()
    try:
        execute_notebook(name, notebook, out_dir, parameters, kernel)
    except PapermillExecutionError as e:
        return Outcome(name, "failed", error=f"{e.ename}: {e.evalue}")
    except Exception as e:  # a dead kernel, a missing kernel, a full disk: this run failed, the others go on
        return Outcome(name, "failed", error=f"{type(e).__name__}: {e}")
    return Outcome(name, "done", seconds=time.perf_counter() - started)

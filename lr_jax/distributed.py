"""Many hosts: starting JAX's multi-process runtime from flags or environment, and which process writes files."""

from __future__ import annotations

import os
from typing import Mapping, Optional

# Read when the matching flag is absent (JAX itself reads JAX_COORDINATOR_ADDRESS too).
ENVIRONMENT = {
    "coordinator_address": "JAX_COORDINATOR_ADDRESS",
    "num_processes": "JAX_NUM_PROCESSES",
    "process_id": "JAX_PROCESS_ID",
}


def _cluster_launched(environ: Mapping[str, str]) -> bool:
    """Launchers whose variables `jax.distributed.initialize()` reads itself: Slurm, Open MPI, TPU pods."""
    hosts = environ.get("TPU_WORKER_HOSTNAMES") or environ.get("TPU_PROCESS_ADDRESSES") or ""
    return (
        int(environ.get("SLURM_NTASKS", "1") or 1) > 1
        or int(environ.get("OMPI_COMM_WORLD_SIZE", "1") or 1) > 1
        or len([h for h in hosts.split(",") if h.strip()]) > 1
    )


def settings(
    coordinator_address: Optional[str] = None,
    num_processes: Optional[int] = None,
    process_id: Optional[int] = None,
    environ: Mapping[str, str] = os.environ,
) -> Optional[dict]:
    """The arguments for `jax.distributed.initialize` from flags, else the environment; None for one process.

    Values left None are auto-detected by JAX on Slurm, Open MPI and TPU pods. Raises ValueError naming the
    flag (or variable) for an inconsistent setting."""
    values = {"coordinator_address": coordinator_address, "num_processes": num_processes, "process_id": process_id}
    for name, variable in ENVIRONMENT.items():
        if values[name] is None and environ.get(variable):
            raw = environ[variable]
            try:
                values[name] = raw if name == "coordinator_address" else int(raw)
            except ValueError:
                raise ValueError(f"environment variable {variable}={raw!r} is not an integer") from None
    count, index = values["num_processes"], values["process_id"]
    if count is not None and count < 1:
        raise ValueError(f"--num_processes must be at least 1, got {count}")
    if index is not None and (index < 0 or (count is not None and index >= count)):
        raise ValueError(f"--process_id={index} must lie in [0, --num_processes={count})")
    if count == 1:
        return None
    requested = any(v is not None for v in values.values())
    if not requested and not _cluster_launched(environ):
        return None
    if requested and not _cluster_launched(environ):
        missing = [f"--{name}" for name, value in values.items() if value is None]
        if missing:
            raise ValueError(
                f"a multi-process run needs --coordinator_address, --num_processes and --process_id "
                f"(or {', '.join(ENVIRONMENT.values())}); missing {', '.join(missing)}"
            )
    return values


def initialize(
    coordinator_address: Optional[str] = None,
    num_processes: Optional[int] = None,
    process_id: Optional[int] = None,
) -> bool:
    """Starts the multi-process runtime when asked for (see `settings`); returns whether several processes run.

    Must run before any other JAX call. CPU collectives between processes go over gloo."""
    import jax

    wanted = settings(coordinator_address, num_processes, process_id)
    if wanted is None:
        return False
    if not jax.distributed.is_initialized():
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(**wanted)
    return jax.process_count() > 1


def is_main_process() -> bool:
    """Process 0 alone writes results, logs and plain files; every process takes part in orbax checkpoints."""
    import jax

    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Waits until every process reaches the barrier `name` (a no-op for one process)."""
    import jax

    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)

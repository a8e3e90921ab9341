"""Several processes (hosts) on ``jax.distributed``, JAX's own multi-process runtime.

Each process runs the same program; ``runtime.sweep`` gives each its own contiguous
slice of the data (by ``jax.process_index()``), tallies it on its local devices and
merges the exact statistics across processes once at the end, so every process
ends with the same result; only the writer (process 0, ``is_writer()``) writes
results. Set-up, as JAX documents it (call before any other JAX work)::

    initialize("10.0.0.1:1234", num_processes=4, process_id=i)   # explicit
    initialize()   # flags absent: JAX_COORDINATOR_ADDRESS (read by JAX) with
                   # JAX_NUM_PROCESSES / JAX_PROCESS_ID (read here), or a cluster
                   # JAX detects (SLURM, Open MPI, Cloud TPU pods); nothing found:
                   # one process

The CLI passes ``--coordinator ADDR:PORT --num-processes N --process-id I``
(``add_arguments``). On CPU, processes exchange statistics over JAX's CPU
collectives (gloo, the default of jax 0.10).
"""

from __future__ import annotations

import logging
import os

# JAX is imported where it is used: ``add_arguments`` serves the commands' ``--help``.

log = logging.getLogger(__name__)

#: the environments JAX documents as needing no arguments (SLURM, Open MPI, Cloud TPU),
#: each recognised by what it sets; Kubernetes is left out: every pod would look like a
#: job of several processes
SLURM_VARS = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID",
              "SLURM_LOCALID")
OMPI_VAR = "OMPI_MCA_orte_hnp_uri"
GKE_TPU_VARS = ("TPU_WORKER_HOSTNAMES", "TPU_PROCESS_ADDRESSES")
GOOGLE_PCI_VENDOR = "0x1ae0"   # Cloud TPU chips on a TPU VM's PCI bus
AUTO_DETECTED = ("SlurmCluster", "OmpiCluster", "GceTpuCluster", "GkeTpuCluster")


def detected_cluster() -> str | None:
    """The cluster environment (one of ``AUTO_DETECTED``, named as JAX names it) this
    process runs in, from what the environment sets, or None: a task of ``srun`` (every
    one of ``SLURM_VARS``; an ``salloc`` shell lacks ``SLURM_PROCID``), of ``mpirun``
    (``OMPI_VAR``), a GKE TPU pod (``GKE_TPU_VARS``) or a Cloud TPU VM (Google TPU
    chips on its PCI bus). ``jax.distributed.initialize()`` then reads the rest."""
    env = os.environ
    if all(v in env for v in SLURM_VARS):
        return "SlurmCluster"
    if OMPI_VAR in env:
        return "OmpiCluster"
    if any(env.get(v) for v in GKE_TPU_VARS):
        return "GkeTpuCluster"
    if _tpu_chips():
        return "GceTpuCluster"
    return None


def _tpu_chips() -> bool:
    """Whether a Google TPU chip sits on this machine's PCI bus."""
    import glob
    for path in glob.glob("/sys/bus/pci/devices/*/vendor"):
        try:
            with open(path) as f:
                if f.read().strip() == GOOGLE_PCI_VENDOR:
                    return True
        except OSError:
            continue
    return False


def initialize(coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> bool:
    """Starts ``jax.distributed`` when this run is one of several processes.

    With any argument given, or ``JAX_COORDINATOR_ADDRESS`` set, or a cluster JAX
    detects, calls ``jax.distributed.initialize(coordinator, num_processes,
    process_id)`` (JAX fills what is missing from the environment). Otherwise
    (a plain single-process run) does nothing. Returns whether it initialized.
    Idempotent; raises ValueError naming a bad argument.
    """
    num_processes = _env_int("JAX_NUM_PROCESSES") if num_processes is None else num_processes
    process_id = _env_int("JAX_PROCESS_ID") if process_id is None else process_id
    if num_processes is not None and num_processes <= 0:
        raise ValueError(f"--num-processes must be positive, got {num_processes}")
    if process_id is not None and process_id < 0:
        raise ValueError(f"--process-id must be non-negative, got {process_id}")
    if num_processes is not None and process_id is not None and process_id >= num_processes:
        raise ValueError(f"--process-id {process_id} must be below --num-processes "
                         f"{num_processes}")
    if coordinator is not None and ":" not in coordinator:
        raise ValueError(f"--coordinator must be ADDRESS:PORT, got {coordinator!r}")
    if is_initialized():
        return True
    given = any(v is not None for v in (coordinator, num_processes, process_id))
    env = os.environ.get("JAX_COORDINATOR_ADDRESS") is not None
    cluster = None if given or env else detected_cluster()
    if not (given or env or cluster):
        return False
    if num_processes == 1 and not env and not cluster:
        return False  # one process: nothing to coordinate
    import jax
    log.info("jax.distributed.initialize(%s, %s, %s)%s", coordinator, num_processes,
             process_id, f" via {cluster}" if cluster else "")
    jax.distributed.initialize(coordinator, num_processes, process_id)
    return True


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {value!r}") from None


def is_initialized() -> bool:
    """Whether ``jax.distributed`` is running in this process."""
    import jax
    return bool(jax.distributed.is_initialized())


def process_index() -> int:
    import jax
    return jax.process_index()


def process_count() -> int:
    import jax
    return jax.process_count()


def is_writer() -> bool:
    """True in the one process that writes results (process 0)."""
    import jax
    return jax.process_index() == 0


def add_arguments(parser) -> None:
    """``--coordinator``, ``--num-processes``, ``--process-id`` (see ``initialize``)."""
    import argparse
    g = parser.add_argument_group("several processes (jax.distributed)")
    g.add_argument("--coordinator", default=argparse.SUPPRESS, metavar="ADDR:PORT",
                   help="process 0's address and a free port; with --num-processes and "
                        "--process-id runs this as one of several processes (default: "
                        "JAX_COORDINATOR_ADDRESS, or SLURM / TPU pod detection, else one "
                        "process)")
    g.add_argument("--num-processes", type=int, default=argparse.SUPPRESS, metavar="N",
                   help="number of processes (default: from the environment, else 1)")
    g.add_argument("--process-id", type=int, default=argparse.SUPPRESS, metavar="I",
                   help="this process's index, 0..N-1 (default: from the environment, "
                        "else 0)")


def initialize_from_args(args) -> bool:
    """``initialize`` from the parsed ``add_arguments`` flags (absent ones: None)."""
    return initialize(getattr(args, "coordinator", None),
                      getattr(args, "num_processes", None),
                      getattr(args, "process_id", None))

"""A Dask client for the pipeline: a GPU node, a CPU node, or a running scheduler.

:func:`get_client` picks one of three, in this order:

1. ``address`` given: connect to that scheduler (a cluster started elsewhere: SLURM,
   Kubernetes, ``dask scheduler`` ...). A plain ``tcp://`` address that is not on this
   machine is refused unless ``allow_insecure=True``: without TLS anyone who can reach
   the port can run code on the workers. Use ``tls://`` with a
   :class:`distributed.security.Security`.
2. GPUs present (``torch.cuda.device_count() > 0``) or ``gpu=True``: a
   :class:`dask_cuda.LocalCUDACluster`, one worker per GPU (each worker sees its own GPU
   as ``cuda:0``).
3. Otherwise a :class:`distributed.LocalCluster` on 127.0.0.1.

Threads. The pipeline's tasks are coarse and each is parallel inside (torch, BLAS), so
a local cluster is sized so that no core is oversubscribed: ``n_workers *
threads_per_worker`` Dask task slots, each given ``cores // (n_workers *
threads_per_worker)`` torch/BLAS threads (the default: one task slot per worker and
``max(1, cores // 4)`` workers, so 4 intra-op threads per task; with ``threads_per_task``,
e.g. the calibrated threads the pipeline passes, ``cores // threads_per_task`` workers of
that many threads). The limit is set in
each worker process before it starts (``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``,
``OPENBLAS_NUM_THREADS``) and again by a worker plugin that calls
``torch.set_num_threads`` and threadpoolctl. Workers that run inside the calling process
(``processes=False``) share its thread pools, which are left alone.

Memory. Local workers start with ``MALLOC_TOP_PAD_`` = :data:`MALLOC_TOP_PAD` (16 MiB)
unless the environment or Dask's ``distributed.nanny.pre-spawn-environ`` sets it. Dask
starts workers with ``MALLOC_TRIM_THRESHOLD_=65536`` so that freed memory goes back to the
OS; glibc then trims each heap to the byte and the next allocation faults its pages in
again. Reading a 1024-row block of texture vectors from Zarr (1024 chunk files of 1.2 MB)
ran at 1.3-1.5 GB/s in such a worker against 2.6-4.0 GB/s in a plain process on the
2-core dev VM (page faults are slow there); with a 16 MiB pad kept at the top of each
heap it ran at 2.5-3.1 GB/s, and memory still goes back to the OS beyond the pad.

The dashboard of a local cluster is on a free port (``":0"``) unless ``dashboard_port``
names one: distributed binds its HTTP server even when asked for no dashboard, and a fixed
8787 would make two runs on one machine collide. :func:`describe_cluster` reports its link.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import dask
import distributed
from distributed.diagnostics.plugin import WorkerPlugin

from microscale.errors import ClusterError, GPUUnavailableError, InsecureAddressError

__all__ = [
    "ClusterError",
    "GPUUnavailableError",
    "InsecureAddressError",
    "MALLOC_TOP_PAD",
    "ThreadLimits",
    "cluster_client",
    "describe_cluster",
    "get_client",
]

_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
#: Intra-op threads per task aimed at by the default CPU sizing.
_THREADS_PER_TASK = 4
#: Bytes glibc keeps at the top of a worker's heaps when it trims them (``MALLOC_TOP_PAD_``).
MALLOC_TOP_PAD = 16 * 2**20


def _cores() -> int:
    from dask.system import CPU_COUNT  # affinity and cgroup quota aware

    return max(1, int(CPU_COUNT))


def _gpu_count() -> int:
    import torch

    return torch.cuda.device_count()


def _check_optional_count(value: object, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"The '{name}' parameter must be a positive int. Got {value!r} instead.")
    return value


def _is_loopback(host: str) -> bool:
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: assume it is another machine


def _check_address(address: str, *, allow_insecure: bool) -> str:
    if not isinstance(address, str) or not address:
        raise ValueError(f"The 'address' parameter must be a scheduler address. Got {address!r}.")
    text = address if "://" in address else f"tcp://{address}"
    parts = urlsplit(text)
    scheme = parts.scheme
    if scheme in ("tls", "inproc"):
        return address
    host = parts.hostname or ""
    if scheme in ("tcp", "ucx", "ws") and not _is_loopback(host) and not allow_insecure:
        raise InsecureAddressError(
            f"Refusing to connect to the scheduler at {address!r} over plain {scheme}: "
            "without TLS anyone who can reach that port can run code on the workers and read "
            "the data. Use a tls:// address with security=distributed.security.Security(...),"
            " tunnel the port to localhost (e.g. ssh -L), or pass allow_insecure=True on a "
            "trusted private network."
        )
    return address


class ThreadLimits(WorkerPlugin):
    """Worker plugin: cap torch and BLAS threads in the worker's process.

    Parameters
    ----------
    n_threads : int
        Threads for torch's intra-op pool and every BLAS/OpenMP pool.
    owner_pid : int
        Pid of the process that created the cluster; workers running inside it
        (``processes=False``) leave its pools alone.
    """

    idempotent = True
    name = "microscale-thread-limits"

    def __init__(self, n_threads: int, owner_pid: int) -> None:
        self.n_threads = int(n_threads)
        self.owner_pid = int(owner_pid)

    def setup(self, worker: distributed.Worker) -> None:  # noqa: D102 - WorkerPlugin API
        if os.getpid() == self.owner_pid:
            return
        worker.microscale_threads = self.n_threads
        for name in _THREAD_VARIABLES:
            os.environ[name] = str(self.n_threads)
        import torch
        from threadpoolctl import threadpool_limits

        torch.set_num_threads(self.n_threads)
        threadpool_limits(limits=self.n_threads)


def _local_cluster(
    *,
    n_workers: int | None,
    threads_per_worker: int | None,
    processes: bool,
    memory_limit: str | float | None,
    dashboard_address: str,
    threads_per_task: int | None = None,
) -> tuple[distributed.LocalCluster, int]:
    cores = _cores()
    tpw = threads_per_worker or 1
    if n_workers is None:
        n_workers = max(1, cores // (tpw * (threads_per_task or _THREADS_PER_TASK)))
    slots = n_workers * tpw
    if slots > cores:
        raise ValueError(
            f"n_workers * threads_per_worker = {n_workers} * {tpw} = {slots} task slots on "
            f"{cores} cores would oversubscribe the CPU (each task is multi-threaded). Ask "
            f"for at most {cores} slots, e.g. n_workers={max(1, cores // tpw)}."
        )
    inner = max(1, cores // slots)
    if threads_per_task is not None:  # never more than the cores allow
        inner = min(threads_per_task, inner)
    kwargs: dict[str, Any] = {
        "n_workers": n_workers,
        "threads_per_worker": tpw,
        "processes": processes,
        "dashboard_address": dashboard_address,
        "memory_limit": memory_limit if memory_limit is not None else "auto",
    }
    if processes:
        kwargs["host"] = "127.0.0.1"  # (threads talk over inproc://, which has no host)
        kwargs["env"] = {name: str(inner) for name in _THREAD_VARIABLES}
    environ = _worker_environ()
    environ.update({name: inner for name in _THREAD_VARIABLES})
    with dask.config.set({"distributed.nanny.pre-spawn-environ": environ}):
        cluster = distributed.LocalCluster(**kwargs)
    return cluster, inner


def _worker_environ() -> dict[str, Any]:
    """Dask's ``pre-spawn-environ`` for local workers, with a malloc top pad (module doc)."""
    environ = dict(dask.config.get("distributed.nanny.pre-spawn-environ", {}))
    if "MALLOC_TOP_PAD_" not in os.environ:
        environ.setdefault("MALLOC_TOP_PAD_", MALLOC_TOP_PAD)
    return environ


def _cuda_cluster(
    *,
    n_workers: int | None,
    threads_per_worker: int | None,
    memory_limit: str | float | None,
    dashboard_address: str,
) -> tuple[Any, int]:
    n_gpus = _gpu_count()
    if n_gpus == 0:
        raise GPUUnavailableError(
            "gpu=True, but torch sees no CUDA device on this machine (check "
            "CUDA_VISIBLE_DEVICES and the driver with nvidia-smi). Leave gpu=None to use "
            "the CPU when there is no GPU, or pass the address of a GPU cluster."
        )
    n = n_workers or n_gpus
    if n > n_gpus:
        raise ValueError(
            f"n_workers={n} GPU workers were asked for, but there are {n_gpus} GPUs; "
            "dask-cuda runs one worker per GPU."
        )
    try:
        from dask_cuda import LocalCUDACluster
    except ImportError as exc:  # pragma: no cover - dask-cuda is a dependency
        raise ClusterError(f"GPU workers need dask-cuda ({exc}); pip install dask-cuda.") from exc
    inner = max(1, _cores() // n)
    try:
        with dask.config.set({"distributed.nanny.pre-spawn-environ": _worker_environ()}):
            cluster = LocalCUDACluster(
                CUDA_VISIBLE_DEVICES=list(range(n)),
                n_workers=n,
                threads_per_worker=threads_per_worker or 1,
                host="127.0.0.1",
                dashboard_address=dashboard_address,
                memory_limit=memory_limit if memory_limit is not None else "auto",
            )
    except Exception as exc:  # e.g. pynvml.NVMLError_LibraryNotFound
        raise ClusterError(
            f"Could not start GPU workers with dask-cuda: {type(exc).__name__}: {exc}. Check "
            "the NVIDIA driver (nvidia-smi) or pass gpu=False."
        ) from exc
    return cluster, inner


def get_client(
    *,
    address: str | None = None,
    n_workers: int | None = None,
    threads_per_worker: int | None = None,
    gpu: bool | None = None,
    processes: bool = True,
    allow_insecure: bool = False,
    security: Any = None,
    memory_limit: str | float | None = None,
    timeout: str | float = "30s",
    dashboard_port: int | None = None,
    threads_per_task: int | None = None,
) -> distributed.Client:
    """A Dask client: to a given scheduler, or to a new local GPU or CPU cluster.

    The local cluster started here is closed with the client's ``close()`` only by
    :func:`cluster_client`; with ``get_client`` call ``client.close()`` and then
    ``client.cluster.close()`` (``client.cluster`` is None for an ``address``).

    Parameters
    ----------
    address : str, optional
        Scheduler address (``tls://host:8786``, ``tcp://127.0.0.1:8786`` ...). The other
        sizing options are then ignored.
    n_workers : int, optional
        Workers of a local cluster. GPU: one per GPU by default (at most that). CPU:
        ``max(1, cores // (4 * threads_per_worker))`` by default.
    threads_per_worker : int, optional
        Dask task slots per worker (default 1). On the CPU, ``n_workers *
        threads_per_worker`` must not exceed the cores; each slot gets
        ``cores // (n_workers * threads_per_worker)`` torch/BLAS threads.
    gpu : bool, optional
        None (default): GPU workers when torch sees a GPU. True: GPU workers, an error
        without a GPU. False: CPU workers.
    processes : bool, optional
        CPU workers in their own processes (default; needed for real parallelism of
        Python code) or as threads of this process (fast to start; for tests and small
        runs).
    allow_insecure : bool, optional
        Allow a plain ``tcp://`` address on another machine.
    security : distributed.security.Security, optional
        TLS settings for a ``tls://`` address.
    memory_limit : str or float, optional
        Per-worker memory limit of a local cluster (default ``"auto"``: the machine's
        memory split between the workers).
    timeout : str or float, optional
        How long to wait for a scheduler.
    dashboard_port : int, optional
        Port of a local cluster's dashboard, on 127.0.0.1 (default: a free port).
    threads_per_task : int, optional
        Torch/BLAS threads per task slot of a local CPU cluster, e.g. the threads
        ``microscale calibrate`` measured best (:func:`microscale.calibration.
        calibrated_threads`): ``n_workers`` then defaults to ``cores // (threads_per_task *
        threads_per_worker)``, and a given ``n_workers`` caps it at ``cores // slots``.
        None: ``cores // slots`` (above). GPU workers ignore it.

    Returns
    -------
    distributed.Client

    Raises
    ------
    InsecureAddressError
        For a non-loopback plain-TCP address without ``allow_insecure``.
    GPUUnavailableError
        For ``gpu=True`` on a machine without a CUDA device.
    ValueError
        For a CPU cluster that would oversubscribe the cores.
    """
    n_workers = _check_optional_count(n_workers, "n_workers")
    threads_per_worker = _check_optional_count(threads_per_worker, "threads_per_worker")
    threads_per_task = _check_optional_count(threads_per_task, "threads_per_task")
    if address is not None:
        address = _check_address(address, allow_insecure=allow_insecure)
        return distributed.Client(address, security=security, timeout=timeout)
    if dashboard_port is not None and not 0 <= int(dashboard_port) <= 65535:
        raise ValueError(
            f"The 'dashboard_port' parameter must be a port number 0-65535. Got {dashboard_port!r}."
        )
    dashboard_address = ":0" if dashboard_port is None else f"127.0.0.1:{int(dashboard_port)}"
    use_gpu = (_gpu_count() > 0) if gpu is None else bool(gpu)
    if use_gpu:
        cluster, inner = _cuda_cluster(
            n_workers=n_workers,
            threads_per_worker=threads_per_worker,
            memory_limit=memory_limit,
            dashboard_address=dashboard_address,
        )
    else:
        cluster, inner = _local_cluster(
            n_workers=n_workers,
            threads_per_worker=threads_per_worker,
            processes=processes,
            memory_limit=memory_limit,
            dashboard_address=dashboard_address,
            threads_per_task=threads_per_task,
        )
    try:
        client = distributed.Client(cluster, timeout=timeout)
        client.register_plugin(ThreadLimits(inner, os.getpid()))
    except BaseException:
        cluster.close()
        raise
    return client


@contextlib.contextmanager
def cluster_client(**kwargs: Any) -> Iterator[distributed.Client]:
    """:func:`get_client` as a context manager: closes the client and any cluster it started.

    Examples
    --------
    >>> with cluster_client(processes=False, n_workers=1) as client:  # doctest: +SKIP
    ...     run_features(root, client=client)
    """
    client = get_client(**kwargs)
    cluster = client.cluster if kwargs.get("address") is None else None
    try:
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _worker_info(dask_worker: distributed.Worker) -> dict[str, Any]:
    import torch

    gpu = None
    if torch.cuda.is_available():
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
        gpu = {
            "name": torch.cuda.get_device_name(0),
            "device": visible.split(",")[0] if visible else "0",
            "memory_bytes": int(torch.cuda.get_device_properties(0).total_memory),
        }
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "task_threads": dask_worker.state.nthreads,
        "torch_threads": getattr(dask_worker, "microscale_threads", torch.get_num_threads()),
        "memory_limit": dask_worker.memory_manager.memory_limit,
        "gpu": gpu,
    }


def describe_cluster(client: distributed.Client) -> dict[str, Any]:
    """What the client's workers are, for logs and provenance.

    Returns
    -------
    dict
        ``scheduler`` (address), ``n_workers``, ``n_threads`` (Dask task slots),
        ``n_gpus`` (distinct GPUs seen by the workers), ``workers`` (address -> ``host``,
        ``pid``,
        ``task_threads``, ``torch_threads``, ``memory_limit``, ``gpu``: name, device and
        memory, or None).
    """
    workers = client.run(_worker_info)
    gpus = {(w["host"], w["gpu"]["device"]) for w in workers.values() if w["gpu"]}
    return {
        "scheduler": client.scheduler.address,
        "dashboard": client.dashboard_link,
        "n_workers": len(workers),
        "n_threads": sum(w["task_threads"] for w in workers.values()),
        "n_gpus": len(gpus),
        "workers": dict(sorted(workers.items())),
    }

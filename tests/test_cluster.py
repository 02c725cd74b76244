"""Getting a Dask client: local CPU cluster, a scheduler address, GPU requests."""

import os

import distributed
import pytest

from microscale import cluster
from microscale.cluster import (
    GPUUnavailableError,
    InsecureAddressError,
    cluster_client,
    describe_cluster,
    get_client,
)


def _cuda() -> bool:
    import torch

    return torch.cuda.device_count() > 0


def test_local_threads_cluster():
    with cluster_client(processes=False, n_workers=2, threads_per_worker=1) as client:
        info = describe_cluster(client)
        assert info["n_workers"] == 2 and info["n_threads"] == 2
        assert info["scheduler"].startswith("inproc://")
        assert {w["pid"] for w in info["workers"].values()} == {os.getpid()}
        assert client.submit(sum, [1, 2, 3]).result() == 6
        own_cluster = client.cluster
    assert own_cluster.status.name == "closed"


@pytest.mark.slow
def test_local_process_cluster_limits_threads():
    cores = cluster._cores()
    with cluster_client(processes=True, n_workers=1, threads_per_worker=1) as client:
        info = describe_cluster(client)
        assert info["scheduler"].startswith("tcp://127.0.0.1:")
        (worker,) = info["workers"].values()
        assert worker["pid"] != os.getpid()
        assert worker["torch_threads"] == cores and worker["task_threads"] == 1

        def threads():
            import torch

            return os.environ["OMP_NUM_THREADS"], torch.get_num_threads()

        assert list(client.run(threads).values()) == [(str(cores), cores)]

        def malloc():
            return os.environ.get("MALLOC_TOP_PAD_"), os.environ.get("MALLOC_TRIM_THRESHOLD_")

        # Dask's eager trim stays; a pad keeps the next block's pages (module docstring)
        assert list(client.run(malloc).values()) == [(str(cluster.MALLOC_TOP_PAD), "65536")]


def test_a_malloc_pad_set_by_the_user_is_kept(monkeypatch):
    import dask

    monkeypatch.delenv("MALLOC_TOP_PAD_", raising=False)
    assert cluster._worker_environ()["MALLOC_TOP_PAD_"] == cluster.MALLOC_TOP_PAD
    with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TOP_PAD_": 123}):
        assert cluster._worker_environ()["MALLOC_TOP_PAD_"] == 123
    monkeypatch.setenv("MALLOC_TOP_PAD_", "456")  # inherited by the workers as it is
    assert "MALLOC_TOP_PAD_" not in cluster._worker_environ()


def test_connect_to_a_scheduler_address():
    with distributed.LocalCluster(
        n_workers=1,
        threads_per_worker=1,
        processes=False,
        protocol="tcp://",
        host="127.0.0.1",
        dashboard_address=":0",
    ) as local:
        address = local.scheduler_address
        assert address.startswith("tcp://127.0.0.1:")
        with cluster_client(address=address) as client:
            assert client.submit(max, [4, 7]).result() == 7
            assert describe_cluster(client)["n_workers"] == 1
        assert local.status.name == "running"  # closing the client leaves the cluster up


@pytest.mark.parametrize(
    "address",
    ["tcp://10.1.2.3:8786", "10.1.2.3:8786", "ucx://gpu-node-7:8786", "tcp://[fd00::1]:1"],
)
def test_plain_tcp_to_another_machine_is_refused(address):
    with pytest.raises(InsecureAddressError, match="Refusing to connect .* without TLS"):
        get_client(address=address)


@pytest.mark.parametrize(
    "address",
    ["tcp://127.0.0.1:8786", "localhost:8786", "tcp://[::1]:8786", "tls://10.1.2.3:8786"],
)
def test_loopback_and_tls_addresses_pass_the_check(address):
    assert cluster._check_address(address, allow_insecure=False) == address
    assert cluster._check_address("tcp://10.1.2.3:1", allow_insecure=True)


def test_insecure_error_is_a_value_error():
    assert issubclass(InsecureAddressError, ValueError)


@pytest.mark.skipif(_cuda(), reason="this machine has a GPU")
def test_gpu_requested_without_a_gpu():
    with pytest.raises(GPUUnavailableError, match="gpu=True, but torch sees no CUDA device"):
        get_client(gpu=True)


@pytest.mark.gpu
@pytest.mark.slow
def test_gpu_cluster_one_worker_per_gpu():
    import torch

    with cluster_client(gpu=True) as client:
        info = describe_cluster(client)
        assert info["n_workers"] == info["n_gpus"] == torch.cuda.device_count()


def test_oversubscription_is_refused():
    cores = cluster._cores()
    with pytest.raises(ValueError, match="would oversubscribe the CPU"):
        get_client(gpu=False, n_workers=cores + 1, threads_per_worker=1, processes=False)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_counts_are_validated(bad):
    with pytest.raises(ValueError, match="'n_workers' parameter must be a positive int"):
        get_client(n_workers=bad)

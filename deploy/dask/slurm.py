"""A SLURM cluster for microscale with dask-jobqueue (`pip install dask-jobqueue`).

Run on the login node, keep it running, and pass the printed address to
`microscale run --dask-address` (or the deployment's `dask_address` parameter):

    python deploy/dask/slurm.py --jobs 4 --partition gpu
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    from dask_jobqueue import SLURMCluster  # optional dependency for this deployment

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--partition", default="gpu")
    parser.add_argument("--walltime", default="04:00:00")
    args = parser.parse_args()
    cluster = SLURMCluster(
        queue=args.partition,
        cores=8,
        processes=1,  # one worker per GPU job: the model is loaded once per worker
        memory="64GB",
        walltime=args.walltime,
        job_extra_directives=["--gres=gpu:1"],
        worker_command="dask cuda worker",
        worker_extra_args=["--nthreads", "1"],
        # keep 16 MiB of freed heap: Zarr block reads fault less (see microscale.cluster)
        job_script_prologue=["export MALLOC_TOP_PAD_=16777216"],
        # the scheduler binds to the login node's cluster-internal interface; enable TLS
        # with `security=distributed.security.Security(...)` for untrusted networks
    )
    cluster.scale(jobs=args.jobs)
    print(f"scheduler: {cluster.scheduler_address}  dashboard: {cluster.dashboard_link}")
    try:
        while True:
            time.sleep(60)
    except KeyboardInterrupt:
        cluster.close()


if __name__ == "__main__":
    main()

"""The stages of an archive run, as library functions over a store (no Prefect here).

An archive run turns the tiles of a store (:mod:`microscale.store`, filled by
:mod:`microscale.ingest`) into texture maps, one module per stage:

1. :mod:`~microscale.stages.features` -- a texture vector or power spectrum per tile;
2. :mod:`~microscale.stages.image_features` -- the pixel-weighted mean of each image's
   tile vectors;
3. :mod:`~microscale.stages.distances` -- the exact (n, n) distance matrix, out of core;
4. :mod:`~microscale.stages.embed` -- metric MDS of the matrix (landmark MDS when large).

:mod:`~microscale.stages._runner` holds what they share: the units of work and how they
run here or on a Dask client; :mod:`~microscale.stages.verify` checks a store against its
completion records (``microscale check``).

Every stage plans only missing work: a unit of work is done when the store holds a
completion record for it with the same extent (row ranges), written after its data (see
the store's module docstring). Re-running a stage after a crash computes exactly the
units without a record; re-running after images were appended computes the new units and
the partial last ones whose extent grew. Before planning, a ``run_*`` function drops the
records whose chunks no longer match their checksums
(:func:`~microscale.stages._runner.drop_damaged`), so damaged units are computed again,
and hashes what its units will read (:func:`~microscale.stages._runner.require_intact`).
``plan_*`` functions list that work,
``compute_*`` functions do one unit (plain picklable functions taking the store's path:
they run on Dask workers, which open the store themselves), and ``run_*`` functions plan,
submit the units to a Dask client or run them one after the other when ``client`` is
None, and report progress through ``on_done(done, total)``.

The ``run_*`` functions and :func:`~microscale.stages.embed.embed` create and resize
arrays, so they hold the store's run lock (:meth:`microscale.store.Store.lock`,
re-entrant in one process) unless ``lock=False``; the ``compute_*`` functions never take
it. A whole run (``microscale run``, the ``pipeline`` flow) holds the same lock from
ingest to results (:mod:`microscale.lock`), and its stages re-enter it.
"""

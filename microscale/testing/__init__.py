"""Builders for tests and benchmarks: hostile input files and small synthetic stores.

:mod:`microscale.testing.hostile` writes files that attack a reader (decompression bombs,
an XML entity bomb); :mod:`microscale.testing.stores` fills small stores with random
tiles; :mod:`microscale.testing.peaks` measures the machine's peaks that every benchmark
prints; :mod:`microscale.testing.real_images` reads real images from the wheels that ship
them. The tests and the benchmarks share them, so a benchmark never imports the tests.
"""

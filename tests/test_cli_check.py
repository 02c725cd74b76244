"""``microscale check``: names what is damaged, exit status 0 / 1 / 2, ``--repair``."""

import numpy as np

from microscale import store as st
from microscale.cli import main
from microscale.stages import distances as dist
from microscale.stages import features as feat
from microscale.stages import image_features as imf
from microscale.testing.stores import make, random_images


def _stages(root):
    feat.run_features(root, descriptor="ps")
    imf.image_features(root, descriptor="ps", images_per_task=4)
    return dist.run_distances(root, descriptor="ps", block_size=5, pairs_per_task=1)


def test_check_names_the_damage_repairs_it_and_a_run_heals_it(tmp_path, capsys):
    root = make(tmp_path / "s", random_images(12, seed=31))
    _stages(root)
    D = st.read_rows(st.open_store(root), "distances/ps")
    assert main(["check", "--store", str(root)]) == 0
    assert "The store is intact." in capsys.readouterr().out

    chunk = root / st.GROUP_NAME / "distances/ps/c/2/0"  # the mirror side of pair (0, 2)
    chunk.write_bytes(chunk.read_bytes()[:50])
    assert main(["check", "--store", str(root)]) == 1
    out = capsys.readouterr().out
    assert "damaged: distances.ps 000000-000002 (rows 0:5, cols 10:12)" in out
    assert "distances/ps/c/2/0: 50 bytes" in out and "--repair" in out

    assert main(["check", "--store", str(root), "--repair"]) == 1
    assert "Dropped the records and chunks of 1 damaged unit(s)" in capsys.readouterr().out
    assert main(["check", "--store", str(root)]) == 1  # dropped: now simply not done
    assert "not done: distances.ps 000000-000002" in capsys.readouterr().out

    assert _stages(root).computed == 1
    np.testing.assert_array_equal(st.read_rows(st.open_store(root), "distances/ps"), D)
    assert main(["check", "--store", str(root)]) == 0


def test_check_of_a_missing_or_busy_store_is_an_error(tmp_path, capsys):
    assert main(["check", "--store", str(tmp_path / "nothing")]) == 2
    assert "No microscale store" in capsys.readouterr().err
    root = make(tmp_path / "s", random_images(3, seed=32))
    with st.open_store(root).lock():
        import subprocess
        import sys

        out = subprocess.run(
            [sys.executable, "-m", "microscale.cli", "check", "--store", str(root)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert out.returncode == 2 and "microscale check: error" in out.stderr

"""The deployment's pull step: start a run in the microscale checkout, or say how to name it.

``deploy/prefect.yaml`` calls :func:`set_repository` with ``{{ $MICROSCALE_REPO }}``. When the
variable was set neither when deploying nor in the worker's environment, Prefect drops the
argument, and instead of a ``FileNotFoundError`` on a temporary folder's
``flows/pipeline.py`` the run fails with one line naming the variable and its value.
"""

from __future__ import annotations

import os
from pathlib import Path

from microscale.errors import RepositoryNotFoundError

__all__ = ["set_repository"]

_HOW = (
    "set MICROSCALE_REPO to the microscale checkout (the folder holding flows/pipeline.py "
    "and deploy/prefect.yaml), e.g. `export MICROSCALE_REPO=/opt/microscale` in the "
    "worker's environment before `prefect worker start`, or before `prefect deploy`"
)


def set_repository(directory: str | None = None) -> dict[str, str]:
    """Change to the checkout ``directory`` (a Prefect pull step); its absolute path.

    Parameters
    ----------
    directory : str, optional
        The value of ``MICROSCALE_REPO``; missing when the variable is not set.

    Returns
    -------
    dict
        ``{"directory": absolute path}``, as Prefect's ``set_working_directory`` returns.

    Raises
    ------
    RepositoryNotFoundError
        If ``directory`` is missing, empty, or holds no ``flows/pipeline.py``.
    """
    if not directory:
        raise RepositoryNotFoundError(f"MICROSCALE_REPO is not set: {_HOW}")
    path = Path(directory).expanduser().resolve()
    if not (path / "flows" / "pipeline.py").is_file():
        raise RepositoryNotFoundError(
            f"MICROSCALE_REPO={directory} has no flows/pipeline.py: {_HOW}"
        )
    os.chdir(path)
    return {"directory": str(path)}

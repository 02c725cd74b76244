"""The stages of an archive run, under their old import path (kept for one release).

The stages now live in :mod:`microscale.stages`, one module each; this module re-exports
their public names, so ``microscale.pipeline.run_distances`` and the rest keep working.
Setting one of the stages' settings here (``microscale.pipeline.READ_AHEAD = 1``, or
``monkeypatch.setattr``) sets it in the stage module that reads it, as before.

1. **features** -- :func:`microscale.stages.features.run_features`;
2. **image features** -- :func:`microscale.stages.image_features.image_features`;
3. **distances** -- :func:`microscale.stages.distances.run_distances`;
4. **embedding** -- :func:`microscale.stages.embed.embed`.
"""

from __future__ import annotations

import sys
from types import ModuleType
from typing import Any

from microscale.errors import FailedUnitsError, NoWorkersError
from microscale.stages import _runner, distances, features
from microscale.stages import embed as _embed
from microscale.stages import image_features as _img
from microscale.stages._runner import (
    WORKER_TIMEOUT,
    Batch,
    BlockPair,
    StageCounts,
)
from microscale.stages._runner import (
    Progress as Progress,
)
from microscale.stages._runner import (
    Root as Root,
)
from microscale.stages.distances import (
    AUTO_BLOCK_SIZES,
    BLOCK_MEMORY_FRACTION,
    auto_block_size,
    compute_distance_block,
    compute_distance_blocks,
    distance_task_bytes,
    plan_distance_blocks,
    run_distances,
)
from microscale.stages.distances import (
    DEFAULT_PAIRS_PER_TASK as DEFAULT_PAIRS_PER_TASK,
)
from microscale.stages.distances import (
    READ_AHEAD as READ_AHEAD,
)
from microscale.stages.embed import DEFAULT_LANDMARKS, DENSE_LIMIT, embed
from microscale.stages.features import (
    SKETCH_BLOCK,
    SKETCHED_DESCRIPTORS,
    compute_feature_batch,
    plan_feature_batches,
    run_features,
)
from microscale.stages.image_features import (
    DEFAULT_IMAGES_PER_TASK as DEFAULT_IMAGES_PER_TASK,
)
from microscale.stages.image_features import (
    IMAGE_CHUNK_BYTES as IMAGE_CHUNK_BYTES,
)
from microscale.stages.image_features import (
    compute_image_features,
    image_features,
    plan_image_groups,
)
from microscale.store import DESCRIPTORS
from microscale.store import LEVELS as LEVELS
from microscale.weights import DEFAULT_LAYERS as DEFAULT_LAYERS
from microscale.weights import DEFAULT_WEIGHTS as DEFAULT_WEIGHTS

__all__ = [
    "AUTO_BLOCK_SIZES",
    "BLOCK_MEMORY_FRACTION",
    "DEFAULT_LANDMARKS",
    "DENSE_LIMIT",
    "DESCRIPTORS",
    "SKETCH_BLOCK",
    "SKETCHED_DESCRIPTORS",
    "Batch",
    "BlockPair",
    "FailedUnitsError",
    "NoWorkersError",
    "StageCounts",
    "WORKER_TIMEOUT",
    "auto_block_size",
    "compute_distance_block",
    "compute_distance_blocks",
    "compute_feature_batch",
    "compute_image_features",
    "distance_task_bytes",
    "embed",
    "image_features",
    "plan_distance_blocks",
    "plan_feature_batches",
    "plan_image_groups",
    "run_distances",
    "run_features",
]

_STAGES = (_runner, features, _img, distances, _embed)


class _ForwardingModule(ModuleType):
    """Setting a name here also sets it in each stage module that holds the same object."""

    def __setattr__(self, name: str, value: Any) -> None:
        if not name.startswith("__") and name in self.__dict__:
            old = self.__dict__[name]
            for stage in _STAGES:
                if name in vars(stage) and vars(stage)[name] is old:
                    setattr(stage, name, value)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _ForwardingModule

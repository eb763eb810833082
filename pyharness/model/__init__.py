"""What the model predicts: a zsmalloc policy (`policy.py`) and a pool that follows it
(`pool.py`), fed the same operations as the guest. Nothing here knows a kernel."""

from .policy import (
    EINVAL,
    ENOMEM,
    ENOSPC,
    PAGE_SIZES,
    X86_64,
    ChainRule,
    CompactionRule,
    FullnessScheme,
    Geometry,
    InsertRule,
    Policy,
    SizeClass,
    class_table,
    huge_class_size,
    known_policies,
    policy,
)
from .pool import ClassStats, Handle, Placement, PoolModel, insert_position

__all__ = [
    "EINVAL",
    "ENOMEM",
    "ENOSPC",
    "PAGE_SIZES",
    "X86_64",
    "ChainRule",
    "ClassStats",
    "CompactionRule",
    "FullnessScheme",
    "Geometry",
    "Handle",
    "InsertRule",
    "Placement",
    "Policy",
    "PoolModel",
    "SizeClass",
    "class_table",
    "huge_class_size",
    "insert_position",
    "known_policies",
    "policy",
]

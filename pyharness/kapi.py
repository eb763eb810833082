"""The zsmalloc API facts of each kernel series, in one place the templates read.

Facts come from `shared/reference/zsmalloc-upstream.md`. A template never
tests a version number; it tests one of these fields.
"""

from __future__ import annotations

from dataclasses import dataclass

from .progress import StageError


@dataclass(frozen=True)
class KernelApi:
    series: str
    map_object: bool  # zs_map_object/zs_unmap_object with ZS_MM_* modes
    malloc_nid: bool  # zs_malloc takes a node id (7.2)
    lookup_class_index: bool  # zs_lookup_class_index exists
    model_policy: str  # name of the reference-model policy for upstream zsmalloc
    oversize_errno: str  # what zs_malloc returns for size > PAGE_SIZE


APIS = {
    "6.1": KernelApi(
        series="6.1",
        map_object=True,
        malloc_nid=False,
        lookup_class_index=False,
        model_policy="6.1",
        oversize_errno="EINVAL",
    ),
}


def api_for(series: str) -> KernelApi:
    try:
        return APIS[series]
    except KeyError:
        raise StageError(f"no zsmalloc API facts for kernel {series!r} in kapi.py") from None

"""zskit: zsmalloc development, review and CI harness."""

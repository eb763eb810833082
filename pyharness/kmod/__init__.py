"""What is built: kernel C rendered from kmod/, Kbuild, checkpatch, our allocator's choices."""

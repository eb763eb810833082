"""Where the kernel comes from: its identity, Debian's packages, source builds and trees,
toolchain roots, config fragments, its API facts, and the one provision()."""

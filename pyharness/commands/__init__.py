"""The user-facing commands: cli, config, run, matrix, compare, perf, validate."""

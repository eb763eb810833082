"""`zskit bench`: figures measured on this machine, side by side in one run.

density.py (`zskit bench`, `make qemu-bench`): memory each allocator costs on real
data, with figures.py (bench.json, bench.md) and plots.py; loop.py (`zskit bench
loop`, `make bench-loop`): the inner loop's seconds.
"""

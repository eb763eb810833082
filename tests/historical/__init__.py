"""The historical-bug corpus: zsmalloc (and zram) bugs upstream fixed, planted at test time.

corpus.py holds the entries (small text replacements of a pristine linux-source file, never a
copy of upstream code) and writes each as a one-patch series for `zskit validate`; the runner
is `zskit selftest historical` (pyharness/commands/selftest.py), which loads corpus.py from
this directory by path (product code does not import tests/). test_corpus.py runs the whole
corpus when ZSKIT_HISTORICAL=1; tests/guest/test_historical.py runs a fast subset.
"""

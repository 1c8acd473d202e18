"""cocaine's benchmark suite: scenarios run against cocaine and its baselines, interleaved.

``python bench/run.py`` is the entry point; see ``bench/README.md``.
"""

"""Experiments: end-to-end studies that compose the wings (``curator bench kt``).

This is the one place above the wings besides the CLI: it may import ``index_builder`` and
``distill`` (never ``api``), and no wing or core module imports it, except the CLI lazily.
"""

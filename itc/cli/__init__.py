"""Command-line entry points (``itc-run``, ``itc-curves``, ``itc-build-toy``)."""

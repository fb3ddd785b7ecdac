"""Sub-commands of the ``onlymine`` CLI (thin layers over the library)."""

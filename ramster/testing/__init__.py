"""Harnesses shared by tests, benchmarks and the operator's bench: the realistic page corpus,
the in-process twin of the holder transport, node processes and network namespaces."""

"""Test harnesses that build real infrastructure (network namespaces); not used at run time."""

"""A tiny Launch bundle for the tests: no requirements, loads in milliseconds."""

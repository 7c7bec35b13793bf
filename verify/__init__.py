"""Caption verification stages: plain classes (configure, `setup()` once, call on a batch), no Ray."""

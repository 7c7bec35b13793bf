"""Training side: read shards, batch, encode, train on Ray Train, export, evaluate.

`train.load_model(path)` loads an exported model (imported lazily: the CLI imports this package and
must not pay for torch on every command).
"""

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "load_model":
        from train.export import load_model

        return load_model
    raise AttributeError(name)

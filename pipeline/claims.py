"""The run's source claims (annotate.ingest.SourceClaims): one registry per annotate invocation, seeded
with the sources the run directory already holds. With Ray it is one actor every ingest worker asks, on
whatever node; without Ray, a plain object in the process.
"""

from __future__ import annotations

from typing import Any


class ClaimsRegistry:
    """First claim wins; the run's committed and partly committed sources are claimed from the start."""

    def __init__(self, owners: dict[str, str]) -> None:
        self._owners = dict(owners)

    def claim(self, source_id: str, input_path: str) -> str:
        return self._owners.setdefault(source_id, input_path)


class RayClaims:
    """A ClaimsRegistry in a Ray actor, behind the same `claim` call; pickles into stage workers."""

    def __init__(self, owners: dict[str, str]) -> None:
        import ray

        # No CPU reserved: the actor answers a dictionary lookup per source and must not take a
        # stage worker's place on a small cluster.
        self._actor: Any = ray.remote(num_cpus=0)(ClaimsRegistry).remote(owners)

    def claim(self, source_id: str, input_path: str) -> str:
        import ray

        return ray.get(self._actor.claim.remote(source_id, input_path))

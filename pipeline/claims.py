"""The run's source claims (annotate.ingest.SourceClaims): one registry per annotate invocation, seeded
with the sources the run directory already holds. With Ray it is one actor every ingest worker asks, on
whatever node; without Ray, a plain object in the process.
"""

from __future__ import annotations

from typing import Any


class ClaimsRegistry:
    """The run's committed sources own their ids; among this invocation's inputs the one listed first
    does. Claims arrive in whatever order parallel workers reach them: a claim by an input listed before
    the current owner takes the id over (the later copy it replaces was already let through, and the
    writer's check, in listing order, then records that one as the duplicate)."""

    def __init__(self, owners: dict[str, str], listing: list[str] | None = None) -> None:
        self._owners = {source_id: (-1, path) for source_id, path in owners.items()}
        self._rank = {path: index for index, path in enumerate(listing or [])}

    def claim(self, source_id: str, input_path: str) -> str:
        rank = self._rank.get(input_path, len(self._rank))
        owner = self._owners.get(source_id)
        if owner is None or rank < owner[0]:
            self._owners[source_id] = (rank, input_path)
            return input_path
        return owner[1]


class RayClaims:
    """A ClaimsRegistry in a Ray actor, behind the same `claim` call; pickles into stage workers."""

    def __init__(self, owners: dict[str, str], listing: list[str] | None = None) -> None:
        import ray

        # No CPU reserved: the actor answers a dictionary lookup per source and must not take a
        # stage worker's place on a small cluster.
        self._actor: Any = ray.remote(num_cpus=0)(ClaimsRegistry).remote(owners, listing)

    def claim(self, source_id: str, input_path: str) -> str:
        import ray

        return ray.get(self._actor.claim.remote(source_id, input_path))

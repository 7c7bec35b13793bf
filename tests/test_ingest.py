"""The ingest stage and the run's source claims: a source is named by its content, a file that does not
decode fails there, and a second copy of a source fails as a DuplicateSource before any model sees it."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import soundfile as sf

from annotate.audio import AudioDecodeError, content_id
from annotate.ingest import IngestStage
from pipeline.claims import ClaimsRegistry, RayClaims


@pytest.fixture
def tone(tmp_path) -> str:
    path = tmp_path / "tone.wav"
    sf.write(path, 0.1 * np.sin(np.linspace(0, 2000, 16000)).astype(np.float32), 16000, subtype="PCM_16")
    return str(path)


def test_a_source_is_named_by_its_content_and_claimed_for_its_input(tone, tmp_path):
    registry = ClaimsRegistry({})
    [row] = IngestStage(registry)([{"input_path": tone, "status": "ok"}])
    assert row["source_id"] == content_id(tone) and row["status"] == "ok"
    assert registry.claim(row["source_id"], "/elsewhere.wav") == tone


def test_a_second_copy_fails_as_a_duplicate_naming_the_first(tone, tmp_path):
    copy = str(tmp_path / "copy.wav")
    shutil.copyfile(tone, copy)
    first, second = IngestStage(ClaimsRegistry({}))(
        [{"input_path": tone, "status": "ok"}, {"input_path": copy, "status": "ok"}]
    )
    assert first["status"] == "ok"
    assert second["status"] == "failed" and second["error_type"] == "DuplicateSource"
    assert second["error_stage"] == "ingest" and tone in second["error_message"]
    assert second["source_id"] == first["source_id"] and second.get("segment_id") is None


def test_a_manifest_source_id_is_kept_and_claimed_like_a_content_id(tone, tmp_path):
    other = tmp_path / "other.wav"
    sf.write(other, np.zeros(16000, np.float32), 16000)
    stage = IngestStage(ClaimsRegistry({}))
    first, second = stage(
        [
            {"input_path": tone, "source_id": "take-1", "status": "ok"},
            {"input_path": str(other), "source_id": "take-1", "status": "ok"},
        ]
    )
    assert first["source_id"] == "take-1" and first["status"] == "ok"
    assert second["error_type"] == "DuplicateSource"


def test_the_runs_committed_sources_own_their_ids_but_their_own_input_resumes(tone, tmp_path):
    copy = str(tmp_path / "copy.wav")
    shutil.copyfile(tone, copy)
    committed = {content_id(tone): tone}
    [resumed] = IngestStage(ClaimsRegistry(committed))([{"input_path": tone, "status": "ok"}])
    [duplicate] = IngestStage(ClaimsRegistry(committed))([{"input_path": copy, "status": "ok"}])
    assert resumed["status"] == "ok" and duplicate["error_type"] == "DuplicateSource"


def test_a_file_that_does_not_decode_fails_in_ingest(tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_text("not audio")
    with pytest.raises(AudioDecodeError):
        IngestStage(ClaimsRegistry({}))([{"input_path": str(bad), "status": "ok"}])


def test_ray_claims_are_one_registry_for_every_worker(ray_cluster):
    import ray

    claims = RayClaims({"committed": "/in/old.wav"})

    @ray.remote(num_cpus=0.1)
    def claim(claims: RayClaims, source_id: str, input_path: str) -> str:
        return claims.claim(source_id, input_path)

    owners = ray.get([claim.remote(claims, "s", f"/in/{i}.wav") for i in range(4)])
    assert len(set(owners)) == 1 and owners[0] in {f"/in/{i}.wav" for i in range(4)}
    assert claims.claim("s", "/in/late.wav") == owners[0]
    assert ray.get(claim.remote(claims, "committed", "/in/new.wav")) == "/in/old.wav"


def test_the_input_listed_first_owns_a_source_whatever_order_the_claims_arrive_in():
    registry = ClaimsRegistry({}, listing=["/in/first.wav", "/in/second.wav", "/in/third.wav"])
    assert registry.claim("s", "/in/second.wav") == "/in/second.wav"  # a faster worker got there first
    assert registry.claim("s", "/in/first.wav") == "/in/first.wav"  # listed before: it takes the id over
    assert registry.claim("s", "/in/third.wav") == "/in/first.wav"
    assert registry.claim("s", "/in/second.wav") == "/in/first.wav"

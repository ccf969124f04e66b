"""The gateway's pure parts: progress folding, tokens, Range and ETag checks, SSE framing."""

import pytest

from contracts.failures import FailureCode
from contracts.messages import (
    JobFailed,
    JobSpec,
    ReplayRequested,
    StageFinished,
    StageProgress,
    StageStarted,
)
from contracts.params import GenerationParams
from contracts.stages import Stage
from services.gateway.auth import Token, TokenKind, TokenSigner, hash_api_key, new_api_key
from services.gateway.errors import ApiError
from services.gateway.media import matches, parse_range
from services.gateway.progress import JobError, JobStatus, JobView

SPEC = JobSpec(job_id="jtest000001", account="a", params=GenerationParams(duration=2, fps=12, seed=3))


def status_of(view: JobView) -> JobStatus:
    return view.status  # read through a call: mypy would keep the narrowing of an earlier assert


def state_of(view: JobView) -> tuple[JobStatus, int, JobError | None]:
    return view.status, view.generation, view.error


def test_progress_weights_stages_and_denoising_steps() -> None:
    view = JobView.submitted(SPEC, price=20)
    assert (view.status, view.progress, view.price) == (JobStatus.QUEUED, 0, 20)
    view.apply(1, StageStarted(job_id=SPEC.job_id, stage=Stage.INGEST))
    assert view.status == "preprocessing"
    view.apply(2, StageFinished(job_id=SPEC.job_id, stage=Stage.INGEST, seconds=1.0))
    view.apply(3, StageStarted(job_id=SPEC.job_id, stage=Stage.BILLING))
    view.apply(4, StageFinished(job_id=SPEC.job_id, stage=Stage.BILLING, seconds=1.0))
    view.apply(5, StageStarted(job_id=SPEC.job_id, stage=Stage.LATENT))
    view.apply(6, StageProgress(job_id=SPEC.job_id, stage=Stage.LATENT, step=3, total=4))
    assert (view.status, view.progress) == ("generating", 10 + 52)
    assert not view.apply(6, StageProgress(job_id=SPEC.job_id, stage=Stage.LATENT, step=4, total=4)), "a repeat"
    view.apply(7, StageFinished(job_id=SPEC.job_id, stage=Stage.LATENT, seconds=2.0))
    assert view.progress == 80
    view.apply(8, JobFailed(job=SPEC, stage=Stage.DECODE, code=FailureCode.INTERNAL, reason="it broke"))
    assert view.terminal and view.error == JobError(code=FailureCode.INTERNAL, message="it broke", stage=Stage.DECODE)
    assert view.stopped_at == Stage.DECODE
    # A replay from decode keeps what ran before it and starts over from there.
    view.apply(9, ReplayRequested(job_id=SPEC.job_id, generation=1, stage=Stage.DECODE))
    assert state_of(view) == (JobStatus.QUEUED, 1, None)
    assert set(view.timings) == {Stage.INGEST, Stage.BILLING, Stage.LATENT}
    # The older generation's stragglers change nothing.
    assert not view.apply(10, StageStarted(job_id=SPEC.job_id, stage=Stage.MUX, generation=0))
    assert status_of(view) == JobStatus.QUEUED


def test_tokens_are_signed_expire_and_keep_their_kind_resource_and_key() -> None:
    signer = TokenSigner(b"0123456789abcdef0123")
    key_hash = hash_api_key(new_api_key())
    link = signer.issue("alice", 60, kind=TokenKind.LINK, key_hash=key_hash, resource="/v1/jobs/j1", now=1000)
    text = signer.encode(link)
    assert signer.decode(text, now=1030) == link
    assert signer.decode(text, now=1061) is None
    assert key_hash not in text and "alice" not in text  # the key's hash travels masked
    assert signer.encode(link) != text  # a fresh nonce each time
    # Any change to the payload breaks the signature; another gateway's secret does not verify it.
    body, signature = text.removeprefix("i2vt.").split(".")
    other = signer.encode(signer.issue("mallory", 60, kind=TokenKind.SESSION, key_hash=key_hash, now=1000))
    assert signer.decode("i2vt." + other.removeprefix("i2vt.").split(".")[0] + "." + signature, now=1030) is None
    assert signer.decode(f"i2vt.{body}x.{signature}", now=1030) is None
    assert TokenSigner(b"another secret 0123").decode(text, now=1030) is None
    for junk in ("", "i2vt.", "i2vt..", "i2vt.e30.", "i2vt." + "A" * 5000, "i2v_key"):
        assert signer.decode(junk, now=1030) is None
    key = new_api_key()
    assert key.startswith("i2v_") and len(hash_api_key(key)) == 64 and hash_api_key(key) != key


def test_a_link_token_opens_gets_of_its_resource_or_job_only() -> None:
    job = Token("a", 0, TokenKind.LINK, "0" * 64, "/v1/jobs/j1")
    for path in ("/v1/jobs/j1", "/v1/jobs/j1/video", "/v1/jobs/j1/events"):
        assert job.opens("GET", path) and job.opens("HEAD", path)
    assert not job.opens("POST", "/v1/jobs/j1/cancel") and not job.opens("DELETE", "/v1/jobs/j1")
    for path in ("/v1/jobs/j12", "/v1/jobs/j2/video", "/v1/account", "/v1/jobs"):
        assert not job.opens("GET", path)
    video = Token("a", 0, TokenKind.LINK, "0" * 64, "/v1/jobs/j1/video")
    assert video.opens("GET", "/v1/jobs/j1/video") and not video.opens("GET", "/v1/jobs/j1/poster")
    assert not video.opens("GET", "/v1/jobs/j1")
    assert not Token("a", 0, TokenKind.SESSION, "0" * 64, "/v1/jobs/j1").opens("GET", "/v1/jobs/j1")


def test_range_forms() -> None:
    assert parse_range("bytes=0-99", 1000) == (0, 99)
    assert parse_range("bytes=900-", 1000) == (900, 999)
    assert parse_range("bytes=-100", 1000) == (900, 999)
    assert parse_range("bytes=990-5000", 1000) == (990, 999)
    assert parse_range("bytes=0-1,5-6", 1000) is None  # several ranges: the whole file is a valid answer
    for bad in ("bytes=1000-", "bytes=5-4", "bytes=-0"):
        with pytest.raises(ApiError) as caught:
            parse_range(bad, 1000)
        assert caught.value.status == 416


def test_etag_preconditions() -> None:
    etag = '"abc"'
    assert matches('"abc"', etag) and matches('W/"abc"', etag) and matches('"x", "abc"', etag) and matches("*", etag)
    assert not matches('"abd"', etag) and not matches(None, etag) and not matches("", etag)

"""The whole job through separate service processes, as a user runs it: `i2v generate` with no URLs
starts the embedded stack (nats-server, SeaweedFS, five service processes) and writes the MP4."""

import json
import os
from fractions import Fraction
from pathlib import Path

import av
import pytest

from tests.stacks import run_generate

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def test_generate_through_separate_processes(tmp_path: Path) -> None:
    out = tmp_path / "clip.mp4"
    traces = tmp_path / "spans.jsonl"
    env = {**os.environ, "I2V_TRACE_FILE": str(traces)}
    result = run_generate(
        out,
        "--duration",
        "2",
        "--fps",
        "12",
        "--steps",
        "4",
        "--seed",
        "77",
        "--state-dir",
        str(tmp_path / "state"),
        env=env,
    )
    report = dict(line.split(None, 1) for line in result.stdout.splitlines() if line.strip())
    assert report["price"] == "10 points"  # 8 + ceil(256·192 · 24 frames · 4 steps / 2,457,600)
    assert report["seed"] == "77"
    assert Path(report["video"]) == out.resolve()
    for stage in ("ingest", "billing", "latent", "decode", "mux"):
        assert stage in report["stages"]

    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert stream.codec_context.pix_fmt == "yuv420p"
        assert stream.average_rate == Fraction(12)
        frames = list(container.decode(stream))
        assert container.duration is not None
        duration = container.duration / av.time_base
    assert len(frames) == 24
    assert abs(duration - 2.0) < 1 / 12 + 1e-6
    assert (frames[0].width, frames[0].height) == (256, 192)
    data = out.read_bytes()
    assert data.find(b"moov") < data.find(b"mdat"), "not faststart"

    # One job is one trace across the CLI and every service process.
    spans = [json.loads(line) for line in traces.read_text().splitlines()]
    services = {span["service"] for span in spans}
    assert {"i2v-cli", "i2v-ingest", "i2v-billing", "i2v-latent", "i2v-decode", "i2v-mux"} <= services
    assert len({s["trace_id"] for s in spans}) == 1, {(s["service"], s["name"], s["trace_id"]) for s in spans}

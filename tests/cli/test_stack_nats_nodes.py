"""`i2v stack up --nats-nodes` takes 1 or an odd cluster size; `i2v stack streams` declares the streams on
every node of a cluster named in I2V_NATS_URL, with I2V_STREAM_REPLICAS copies each."""

import asyncio
from pathlib import Path

import nats
import pytest

from contracts.subjects import CANCEL_BUCKET, DLQ_STREAM, EVENTS_STREAM, WORK_STREAM
from infra.nats_cluster import NatsCluster
from services.cli.main import main


@pytest.mark.parametrize("nodes", ["2", "4", "0", "three"])
def test_stack_up_refuses_a_cluster_size_in_one_line(nodes: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["stack", "up", "--nats-nodes", nodes])
    assert exited.value.code == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "--nats-nodes" in error and "give 1, or 3, 5 or 7" in error


def test_streams_refuses_a_url_list_with_an_empty_entry(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("I2V_NATS_URL", "nats://127.0.0.1:9,,nats://127.0.0.1:10")
    assert main(["stack", "streams"]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "empty entry" in error


async def _replicas(urls: list[str]) -> dict[str, int]:
    nc = await nats.connect(urls)
    try:
        js = nc.jetstream()
        names = (WORK_STREAM, EVENTS_STREAM, DLQ_STREAM, f"KV_{CANCEL_BUCKET}")
        return {name: (await js.stream_info(name)).config.num_replicas or 1 for name in names}
    finally:
        await nc.close()


@pytest.mark.integration
def test_streams_declares_on_a_cluster_with_the_replicas_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with NatsCluster(tmp_path / "cluster", 3) as cluster:
        monkeypatch.setenv("I2V_NATS_URL", cluster.url)
        monkeypatch.setenv("I2V_STREAM_REPLICAS", "3")
        code = main(["stack", "streams"])
        out = capsys.readouterr()
        assert code == 0, out.err
        assert "(3 replica(s))" in out.out
        replicas = asyncio.run(_replicas(cluster.urls))
    assert set(replicas.values()) == {3}

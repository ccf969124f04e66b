"""Schemathesis against a real gateway: every operation of its OpenAPI document, then the stateful links
(submit -> status, events, cancel, replay, media, delete), bounded in time: no 5xx, no answer that
contradicts the document."""

import asyncio
import os
import sys
from pathlib import Path

import pytest

from infra.nats_server import NatsServer
from infra.objectstore import S3ObjectStore
from infra.seaweed import SeaweedS3
from tests.services.gateway.conftest import running_gateway

pytestmark = [pytest.mark.slow, pytest.mark.integration]

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
MAX_TIME_S = 60


async def test_schemathesis_finds_no_server_error_and_no_mismatch_with_the_document(
    tmp_path: Path, gateway_nats: NatsServer, seaweed: SeaweedS3, object_store: S3ObjectStore
) -> None:
    async with running_gateway(tmp_path, gateway_nats, seaweed, object_store, gateway_max_active_jobs=100_000) as gw:
        _, key = gw.account(10**9)
        command = [
            str(Path(sys.executable).with_name("st")),
            "--config-file",
            str(HERE / "schemathesis.toml"),
            "run",
            f"{gw.url}/openapi.json",
            "--header",
            f"Authorization: Bearer {key}",
            "--checks",
            "all",
            "--max-time",
            str(MAX_TIME_S),
            "--max-examples",
            "10",
            "--seed",
            "8",
            "--request-timeout",
            "10",
            "--no-color",
        ]
        env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.services.gateway.schemathesis_hooks", "PYTHONPATH": str(ROOT)}
        run = await asyncio.create_subprocess_exec(
            *command, cwd=tmp_path, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        output, _ = await asyncio.wait_for(run.communicate(), MAX_TIME_S + 120)
    text = output.decode(errors="replace")
    print(text[-6000:])
    assert run.returncode == 0, text[-12000:]
    assert "API Links:" in text and " 0 covered" not in text, "the stateful phase followed no link"

"""`safer consent export --fhir` (issue 13): consent records on hips.consent → FHIR R4."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fhir.resources.R4B.bundle import Bundle

from broker import consent_out_record, make_producer, pseudonym, send_all
from consent import ConsentRecord
from schemas import ConsentState

from .spine import REPO, make_runtime

pytestmark = pytest.mark.kafka


def test_consent_records_export_as_a_fhir_bundle(
    kafka_bootstrap: str, tmp_path: Path, unique_id: str
) -> None:
    prefix = f"cfx{unique_id}"
    runtime = make_runtime(tmp_path, kafka_bootstrap, prefix)
    subject = pseudonym(runtime.keys.pseudonym_secret(), "nhs:9992048719")
    records = [
        ConsentRecord.create(
            subject_pseudonym=subject,
            state=state,
            decided_by="MASH team manager 4471",
            agency_id="portsmouth-csc",
            recorded_at=datetime(2026, 11, day, 9, 0, tzinfo=UTC),
        )
        for day, state in ((20, ConsentState.GIVEN), (24, ConsentState.WITHDRAWN))
    ]

    async def publish() -> None:
        await runtime.create_topics()
        producer = make_producer(kafka_bootstrap)
        await producer.start()
        try:
            await send_all(
                producer,
                [
                    consent_out_record(
                        runtime.codec,
                        runtime.keys.signing_identity("portsmouth-csc"),
                        r,
                        topic=runtime.settings.topics.consent,
                    )
                    for r in records
                ],
            )
        finally:
            await producer.stop()

    asyncio.run(publish())
    env = dict(os.environ)
    env.update(
        KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
        SAFER_TOPIC_PREFIX=prefix,
        SAFER_DATA_DIR=str(tmp_path / "data"),
        SAFER_DEPLOY_DIR=str(REPO / "deploy"),
    )
    result = subprocess.run(
        [sys.executable, "-m", "safer", "consent", "export", "--fhir"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    bundle = json.loads(result.stdout)
    Bundle.model_validate(bundle)
    (entry,) = bundle["entry"]  # the latest record for the one person
    consent = entry["resource"]
    assert consent["status"] == "inactive" and consent["provision"]["type"] == "deny"
    assert consent["patient"]["identifier"]["value"] == subject
    assert "9992048719" not in result.stdout

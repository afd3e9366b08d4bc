"""Issue 4: the audit feed is SIGKILLed mid-stream, restarted, and the log holds.

The feed runs as its own process (this module, run with ``python -m``). The
router and every recipient adapter run in the test's process on the real
broker, so audit records and receipts stream in while the feed is killed at a
random point, after it has written at least one signed checkpoint, while the
first half of the concerns streams in; the second half arrives while it is
dead. Before the restart, part of ``hips.audit`` is produced again, as a
router replay would.

Afterwards: every record on ``hips.audit`` and ``hips.receipts`` is in the
log exactly once (no gap, no duplicate); the log verifies with the log key; a
consistency proof from every earlier checkpoint to the final one holds; and
every receipt is logged after, and against, the disclosure it acknowledges.
"""

from __future__ import annotations

import asyncio
import os
import random
import secrets
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from audit import AuditStore, open_checkpoint, verify_consistency, verify_store
from broker import OutRecord, Settings, audit_records_in, make_producer, send_all
from safer import Runtime
from schemas import AuditEvent

from .spine import REPO, account, concerns, make_runtime, publish, read_all, wait_accounted

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

N_CONCERNS = 300


def _start_feed(runtime: Runtime, log: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env.update(
        KAFKA_BOOTSTRAP_SERVERS=runtime.bootstrap,
        SAFER_TOPIC_PREFIX=runtime.settings.topic_prefix,
        SAFER_DATA_DIR=str(runtime.settings.data_dir),
        SAFER_DEPLOY_DIR=str(REPO / "deploy"),
        PYTHONPATH=str(REPO),
    )
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "tests.integration.test_audit_feed_crash"],
            env=env,
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def _until(predicate: object, timeout: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():  # type: ignore[operator]
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def test_feed_killed_mid_stream_leaves_no_gap_no_duplicate_and_a_consistent_log(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    runtime = make_runtime(tmp_path, kafka_bootstrap, prefix=f"feed{secrets.token_hex(3)}")
    await runtime.create_topics()
    items = concerns(N_CONCERNS, seed=11)
    expected = {c.concern_id for c in items}
    topics = runtime.settings.topics

    reader = AuditStore(runtime.settings.audit_db)  # the test's read-only view of the log
    stop = asyncio.Event()
    ready = asyncio.Event()
    services = asyncio.create_task(
        runtime.run_services(stop, feed=False, on_ready=ready.set, store=reader)
    )
    feeds: list[subprocess.Popen[bytes]] = []
    try:
        await asyncio.wait_for(ready.wait(), 60)
        feeds.append(_start_feed(runtime, tmp_path / "feed-1.log"))
        # Half the concerns first: the kill lands while they stream in, and the other
        # half arrives while the feed is dead. (Audit records travel in batches of up
        # to 200, so the log grows in steps too large to time a kill against a total.)
        half = N_CONCERNS // 2
        await publish(runtime, items[:half])

        kill_at = random.Random().randint(200, 800)
        await _until(
            lambda: reader.count() >= kill_at and reader.latest_checkpoint(signed=True),
            120,
            "the first feed to log entries and sign a checkpoint",
        )
        assert feeds[0].poll() is None, "the feed exited on its own"
        feeds[0].send_signal(signal.SIGKILL)
        feeds[0].wait()
        at_kill = reader.count()
        checkpoints_at_kill = len(reader.checkpoints())
        await publish(runtime, items[half:])

        # A router replay: the same signed audit records again, at new offsets.
        replay = (await read_all(runtime, [topics.audit]))[topics.audit][:150]
        producer = make_producer(runtime.bootstrap)
        await producer.start()
        try:
            await send_all(
                producer,
                [OutRecord(topics.audit, r.key, r.value, tuple(r.headers)) for r in replay],
            )
        finally:
            await producer.stop()

        feeds.append(_start_feed(runtime, tmp_path / "feed-2.log"))
        await wait_accounted(reader, expected, timeout=240, service=services)
        assert at_kill < reader.count(), "the kill came after the stream had ended"

        # Let the feed reach the end of both topics, then stop it cleanly.
        on_topics = await read_all(runtime, [topics.audit, topics.receipts])
        ends = {(name, r.partition): r.offset + 1 for name, recs in on_topics.items() for r in recs}
        await _until(
            lambda: all(reader.feed_offsets().get(k, -1) >= v for k, v in ends.items()),
            120,
            "the feed to reach the end of hips.audit and hips.receipts",
        )
        feeds[1].send_signal(signal.SIGTERM)
        assert feeds[1].wait(timeout=60) == 0, "the restarted feed did not stop cleanly"
    finally:
        for proc in feeds:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        stop.set()
        await services

    # No gap, no duplicate: every distinct record on the topics is in the log exactly once.
    records = list(reader.records())
    assert [r.seq for r in records] == list(range(1, len(records) + 1))
    entry_ids = [r.entry_id for r in records]
    assert len(entry_ids) == len(set(entry_ids)), "duplicate entries"
    codec = runtime.codec
    audited = {
        entry["entry_id"]
        for r in on_topics[topics.audit]
        for entry in audit_records_in(codec, r.value)
    }
    assert audited <= set(entry_ids)
    received = [r for r in records if r.event == AuditEvent.RECEIVED]
    assert len(received) == len({r.value for r in on_topics[topics.receipts]})
    assert len(records) == len(audited) + len(received)

    # The log verifies with its key, and every checkpoint is consistent with the final one.
    key = runtime.log_key()
    summary = verify_store(runtime.settings.audit_db, key=key)
    assert summary.checkpoint_verified and summary.consistent
    assert summary.entries == len(records)
    checkpoints = reader.checkpoints()
    assert len(checkpoints) > checkpoints_at_kill >= 1
    final = open_checkpoint(checkpoints[-1].note, key)
    assert final.size == len(records)
    for earlier in checkpoints[:-1]:
        body = open_checkpoint(earlier.note, key)
        proof = reader.consistency_proof(body.size, final.size)
        verify_consistency(body.size, final.size, body.root, final.root, proof)

    # Two-sided audit: each receipt is logged after, and against, what it acknowledges.
    delivered = {
        r.disclosure_id: r
        for r in records
        if r.event in (AuditEvent.DISCLOSED, AuditEvent.REFERRED) and r.disclosure_id
    }
    assert received
    for receipt in received:
        disclosure = delivered[receipt.disclosure_id]
        assert disclosure.seq is not None and receipt.seq is not None
        assert disclosure.seq < receipt.seq
        assert receipt.recipient == disclosure.recipient
        assert (receipt.decision_id, receipt.lscp, receipt.lawful_basis) == (
            disclosure.decision_id,
            disclosure.lscp,
            disclosure.lawful_basis,
        )
        assert receipt.subject_pseudonyms == disclosure.subject_pseudonyms
        assert receipt.payload_sha256 == disclosure.payload_sha256 and not receipt.reason_codes
    assert account(reader).delivered <= account(reader).received
    reader.close()


# -- the feed process ----------------------------------------------------------------


async def _run_feed() -> None:
    settings = Settings.from_env()
    assert settings.bootstrap_servers is not None
    runtime = Runtime(settings, settings.bootstrap_servers)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    with runtime.audit_store() as store:
        # Small batches and frequent checkpoints, so the kill lands between many of each.
        await runtime.audit_feed(store, checkpoint_interval=0.05, batch_size=100).run(stop)


if __name__ == "__main__":
    asyncio.run(_run_feed())

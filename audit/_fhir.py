"""FHIR R4 export of disclosures: AuditEvent resources in a Bundle, as plain dicts.

Follows the IHE Basic Audit Log Patterns (BALP) PrivacyDisclosure profiles:

- a DISCLOSED or REFERRED entry becomes the *source's* record of the
  disclosure (``IHE.BasicAudit.PrivacyDisclosure.Source``: type DCM 110106
  Export, action R);
- a RECEIVED entry becomes the *recipient's* record of it
  (``IHE.BasicAudit.PrivacyDisclosure.Recipient``: type DCM 110107 Import,
  action C).

Both have subtype ISO 21089 ``disclose``, a source agent (DCM 110153) and a
recipient agent (DCM 110152), each with ``who`` and ``network``; the agent
that recorded the event is also ``source.observer`` (BALP ``val-audit-source``).
The patient entity (audit-entity-type 1, object-role 1) is a logical
``Patient`` reference by pseudonym only. BALP allows one patient per
AuditEvent, so an entry about several people becomes one AuditEvent per
pseudonym; a subject-scoped export includes only that subject's. The data
entity (audit-entity-type 2, object-role 3) names the disclosure and carries
the payload hash and the fields disclosed. Restricted concerns are labelled
``R`` (v3-Confidentiality).

No FHIR library is needed at runtime (``fhir.resources`` validates the
output in the tests only). WITHHELD, QUARANTINED and other entries are not
disclosures and are not exported.
"""

from __future__ import annotations

import copy
import hashlib
import uuid
from collections.abc import Collection, Iterable
from datetime import datetime
from typing import Any

from schemas import AuditEvent, ReasonCode

from ._equality import is_equality_reason
from ._record import AuditRecord
from ._reports import (
    ALL_TIME,
    DISCLOSURE_EVENTS,
    NO_LABELS,
    Labels,
    Period,
    format_time,
    restricted_concerns,
    utc_millis,
)

__all__ = [
    "BALP_RECIPIENT",
    "BALP_SOURCE",
    "PSEUDONYM_SYSTEM",
    "fhir_audit_events",
    "fhir_bundle",
]

BALP_SOURCE = (
    "https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit.PrivacyDisclosure.Source"
)
BALP_RECIPIENT = "https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit.PrivacyDisclosure.Recipient"

DCM = "http://dicom.nema.org/resources/ontology/DCM"
LIFECYCLE = "http://terminology.hl7.org/CodeSystem/iso-21089-lifecycle"
OUTCOME = "http://terminology.hl7.org/CodeSystem/audit-event-outcome"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
CONFIDENTIALITY = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"

#: Identifier systems of SAFER Exchange's own ids.
PSEUDONYM_SYSTEM = "urn:safer:hips:subject-pseudonym"
AGENCY_SYSTEM = "urn:safer:agency"
DISCLOSURE_SYSTEM = "urn:safer:disclosure-id"
BASIS_SYSTEM = "urn:safer:lawful-basis"
EVENT_SYSTEM = "urn:safer:audit-event"

_UUID_NS = uuid.UUID("5e0f2a43-7c1b-5d4e-9a59-1f3c6b2d8e70")


def _coding(system: str, code: str, display: str | None = None) -> dict[str, str]:
    out = {"system": system, "code": code}
    if display:
        out["display"] = display
    return out


def _agency_ref(agency_id: str, labels: Labels) -> dict[str, Any]:
    return {
        "identifier": {"system": AGENCY_SYSTEM, "value": agency_id},
        "display": labels.name(agency_id) or agency_id,
    }


def _network(agency_id: str) -> dict[str, str]:
    # The parties meet on Kafka topics, not network addresses; a URI naming the
    # agency stands in (network type 5 = URI).
    return {"address": f"{AGENCY_SYSTEM}:{agency_id}", "type": "5"}


def _resource_id(entry_id: str, pseudonym: str) -> str:
    return str(uuid.uuid5(_UUID_NS, f"{entry_id}\x00{pseudonym}"))


def fhir_audit_events(
    record: AuditRecord,
    *,
    patients: Collection[str] | None = None,
    labels: Labels = NO_LABELS,
    restricted: bool = False,
) -> list[dict[str, Any]]:
    """The BALP AuditEvents for one log entry: one per patient pseudonym.

    ``patients`` limits which of the entry's pseudonyms become patients (a
    subject-scoped export passes the subject's); None means all of them.
    Entries that are not disclosures or receipts give an empty list.
    """
    if record.event in DISCLOSURE_EVENTS:
        source_side = True
    elif record.event is AuditEvent.RECEIVED:
        source_side = False
    else:
        return []
    if record.recipient is None:
        return []
    chosen = [p for p in record.subject_pseudonyms if patients is None or p in patients]
    if not chosen:
        return []
    source = _agency_ref(record.source, labels)
    recipient = _agency_ref(record.recipient, labels)
    observer = source if source_side else recipient
    agents: list[dict[str, Any]] = [
        {
            "type": {"coding": [_coding(DCM, "110153", "Source Role ID")]},
            "who": source,
            "requestor": False,
            "network": _network(record.source),
        },
        {
            "type": {"coding": [_coding(DCM, "110152", "Destination Role ID")]},
            "who": recipient,
            "requestor": False,
            "network": _network(record.recipient),
        },
    ]
    if record.actor not in (record.source, record.recipient):
        agents.append(
            {
                "type": {"coding": [_coding(DCM, "110150", "Application")]},
                "who": {
                    "identifier": {"system": "urn:safer:actor", "value": record.actor},
                    "display": record.actor,
                },
                "requestor": False,
            }
        )
    if record.lawful_basis and source_side:
        agents[0]["policy"] = [f"{BASIS_SYSTEM}:{record.lawful_basis}"]
    mismatch = ReasonCode.PAYLOAD_MISMATCH.value in record.reason_codes
    if source_side:
        what = "referred for review" if record.event is AuditEvent.REFERRED else "disclosed"
        desc = f"{what} to {labels.name(record.recipient)}"
        if record.lawful_basis:
            desc += f" under {labels.citation(record.lawful_basis)}"
    else:
        # Never the equality line (aggregate use only: docs/EQUALITY.md).
        desc = "; ".join(r for r in record.reasons if not is_equality_reason(r)) or "received"
    details: list[dict[str, str]] = []
    if record.seq is not None:
        details.append({"type": "audit_log_seq", "valueString": str(record.seq)})
    if record.concern_id:
        details.append({"type": "concern_id", "valueString": record.concern_id})
    if record.payload_sha256:
        details.append({"type": "payload_sha256", "valueString": record.payload_sha256})
    if record.fields_disclosed:
        details.append(
            {"type": "fields_disclosed", "valueString": ",".join(record.fields_disclosed)}
        )
    if record.policy_revision:
        details.append({"type": "policy_revision", "valueString": record.policy_revision})
    data_entity: dict[str, Any] = {
        "what": {
            "identifier": {"system": DISCLOSURE_SYSTEM, "value": record.disclosure_id or ""},
            "display": f"minimised safeguarding concern, disclosure {record.disclosure_id}",
        },
        "type": _coding(ENTITY_TYPE, "2", "System Object"),
        "role": _coding(OBJECT_ROLE, "3", "Report"),
    }
    if details:
        data_entity["detail"] = details
    if restricted:
        data_entity["securityLabel"] = [_coding(CONFIDENTIALITY, "R", "restricted")]
    purpose: list[dict[str, Any]] = []
    if record.lawful_basis:
        concept: dict[str, Any] = {
            "coding": [
                _coding(BASIS_SYSTEM, record.lawful_basis, labels.citation(record.lawful_basis))
            ]
        }
        if record.purpose:
            concept["text"] = record.purpose
        purpose.append(concept)
    events = []
    for pseudonym in chosen:
        event: dict[str, Any] = {
            "resourceType": "AuditEvent",
            "id": _resource_id(record.entry_id, pseudonym),
            "meta": {"profile": [BALP_SOURCE if source_side else BALP_RECIPIENT]},
            "type": _coding(DCM, "110106", "Export")
            if source_side
            else _coding(DCM, "110107", "Import"),
            "subtype": [
                _coding(LIFECYCLE, "disclose", "Disclose Record Lifecycle Event"),
                _coding(EVENT_SYSTEM, record.event.value),
            ],
            "action": "R" if source_side else "C",
            "recorded": format_time(record.at),
            "outcome": "4" if mismatch else "0",
            "outcomeDesc": desc,
            "agent": copy.deepcopy(agents),
            "source": {
                "site": record.lscp or "hips",
                "observer": copy.deepcopy(observer),
                "type": [_coding(SOURCE_TYPE, "4", "Application Server")],
            },
            "entity": [
                {
                    "what": {
                        "type": "Patient",
                        "identifier": {"system": PSEUDONYM_SYSTEM, "value": pseudonym},
                    },
                    "type": _coding(ENTITY_TYPE, "1", "Person"),
                    "role": _coding(OBJECT_ROLE, "1", "Patient"),
                },
                copy.deepcopy(data_entity),
            ],
        }
        if purpose:
            event["purposeOfEvent"] = copy.deepcopy(purpose)
        events.append(event)
    return events


def fhir_bundle(
    records: Iterable[AuditRecord],
    *,
    patients: Collection[str] | None = None,
    labels: Labels = NO_LABELS,
    period: Period = ALL_TIME,
    generated_at: datetime,
) -> dict[str, Any]:
    """A ``collection`` Bundle of the BALP AuditEvents for entries in ``period``, in log order.

    Pass every record (not only the period's) so that a receipt of a
    restricted concern is labelled even when the referral falls outside the
    period. Deterministic apart from ``timestamp``: the same entries give the
    same resource ids and the same Bundle id.
    """
    recs = sorted({r.entry_id: r for r in records}.values(), key=lambda r: (r.seq or 0, r.at))
    restricted = restricted_concerns(recs)
    entries = []
    digest = hashlib.sha256()
    for r in recs:
        if not period.contains(r.at):
            continue
        for resource in fhir_audit_events(
            r, patients=patients, labels=labels, restricted=r.concern_id in restricted
        ):
            digest.update(resource["id"].encode())
            entries.append({"fullUrl": f"urn:uuid:{resource['id']}", "resource": resource})
    return {
        "resourceType": "Bundle",
        "id": str(uuid.uuid5(_UUID_NS, digest.hexdigest())),
        "type": "collection",
        "timestamp": format_time(utc_millis("generated_at", generated_at)),
        "entry": entries,
    }

"""The one exception tree of SAFER Exchange, and the stable reason codes.

It lives on the bottom floor so that every package can raise and catch the
same errors. Every error carries a reason code, says whether retrying can help,
and says what to do next. Messages never contain personal data: callers pass
identifiers such as ``concern_id`` or field names, never values.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "AuditError",
    "BrokerError",
    "ConfigError",
    "CryptoError",
    "DecodeError",
    "LogTamperedError",
    "PolicyError",
    "ReasonCode",
    "SaferError",
    "SchemaError",
    "SignatureError",
    "ValidationError",
]


class ReasonCode(StrEnum):
    """Stable machine-readable reason codes (DESIGN §8).

    Never rename or reuse a value: quarantine, withheld and referral records
    written years ago carry these strings.
    """

    DECODE_ERROR = "DECODE_ERROR"
    UNKNOWN_SCHEMA = "UNKNOWN_SCHEMA"
    SCHEMA_INVALID = "SCHEMA_INVALID"
    SIGNATURE_INVALID = "SIGNATURE_INVALID"
    UNKNOWN_PUBLISHER = "UNKNOWN_PUBLISHER"
    KEY_REVOKED = "KEY_REVOKED"
    REPLAY = "REPLAY"
    TOO_LARGE = "TOO_LARGE"
    PID_IN_METADATA = "PID_IN_METADATA"
    MINIMUM_DATASET_MISSING = "MINIMUM_DATASET_MISSING"
    NO_LAWFUL_BASIS = "NO_LAWFUL_BASIS"
    CONSENT_REFUSED = "CONSENT_REFUSED"
    BELOW_THRESHOLD = "BELOW_THRESHOLD"
    NO_RECIPIENT = "NO_RECIPIENT"
    ADDRESS_UNRESOLVED = "ADDRESS_UNRESOLVED"
    RESTRICTED_RECORD = "RESTRICTED_RECORD"
    # Added by SAFER Exchange beyond DESIGN §8 (allowed: "add codes as needed").
    NOT_ADDRESSEE = "NOT_ADDRESSEE"
    DECRYPT_FAILED = "DECRYPT_FAILED"
    OUT_OF_SCOPE = "OUT_OF_SCOPE"
    CONFIG_INVALID = "CONFIG_INVALID"
    BROKER_UNAVAILABLE = "BROKER_UNAVAILABLE"
    AUDIT_TAMPERED = "AUDIT_TAMPERED"
    KEY_MISSING = "KEY_MISSING"
    PROCESSING_ERROR = "PROCESSING_ERROR"
    PAYLOAD_MISMATCH = "PAYLOAD_MISMATCH"
    NOT_DELIVERED = "NOT_DELIVERED"
    # Issue 10: the Apache Kafka engine.
    ENGINE_NOT_INSTALLED = "ENGINE_NOT_INSTALLED"
    CHECKSUM_MISMATCH = "CHECKSUM_MISMATCH"
    POSITION_LOST = "POSITION_LOST"
    NOT_AUTHORIZED = "NOT_AUTHORIZED"
    # Issue 11: hostile and implausible input.
    LIMIT_EXCEEDED = "LIMIT_EXCEEDED"
    ID_NOT_CANONICAL = "ID_NOT_CANONICAL"
    IMPLAUSIBLE_DATE = "IMPLAUSIBLE_DATE"
    AGE_ROLE_MISMATCH = "AGE_ROLE_MISMATCH"
    HEADER_INVALID = "HEADER_INVALID"
    CONCERN_ID_CONFLICT = "CONCERN_ID_CONFLICT"
    UNPRODUCIBLE = "UNPRODUCIBLE"
    # Issue 16: structured risk assessment and cumulative concern.
    RISK_RATIONALE_MISSING = "RISK_RATIONALE_MISSING"
    RISK_ASSESSMENT_INVALID = "RISK_ASSESSMENT_INVALID"
    CUMULATIVE_CONCERN = "CUMULATIVE_CONCERN"


class SaferError(Exception):
    """Base of every error SAFER Exchange raises on purpose.

    Attributes:
        code: the stable reason code.
        retriable: True when the same call may succeed later (a broker that is
            still starting, say); False when the input or setup must change.
        hint: what the operator or user should do next.
    """

    default_code: ReasonCode = ReasonCode.DECODE_ERROR
    default_retriable: bool = False

    def __init__(
        self,
        message: str,
        *,
        code: ReasonCode | None = None,
        retriable: bool | None = None,
        hint: str = "",
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code: ReasonCode = code if code is not None else self.default_code
        self.retriable: bool = self.default_retriable if retriable is None else retriable
        self.hint = hint

    def __str__(self) -> str:
        text = f"[{self.code}] {self.message}"
        if self.hint:
            text += f" — {self.hint}"
        return text


class DecodeError(SaferError):
    """Bytes could not be read as a SAFER record (bad framing or Avro body)."""

    default_code = ReasonCode.DECODE_ERROR


class SchemaError(SaferError):
    """A schema is unknown, invalid, or breaks compatibility."""

    default_code = ReasonCode.UNKNOWN_SCHEMA


class ValidationError(SaferError):
    """A record decoded but fails the rules for its content.

    ``fields`` names the offending fields (names only, never values).
    """

    default_code = ReasonCode.SCHEMA_INVALID

    def __init__(
        self,
        message: str,
        *,
        code: ReasonCode | None = None,
        hint: str = "",
        fields: tuple[str, ...] = (),
    ) -> None:
        super().__init__(message, code=code, retriable=False, hint=hint)
        self.fields = fields


class CryptoError(SaferError):
    """Encryption, decryption or key handling failed."""

    default_code = ReasonCode.DECRYPT_FAILED


class SignatureError(CryptoError):
    """A signature is missing, malformed or does not verify."""

    default_code = ReasonCode.SIGNATURE_INVALID


class PolicyError(SaferError):
    """Data-sharing agreements or the directory are invalid."""

    default_code = ReasonCode.CONFIG_INVALID


class ConfigError(SaferError):
    """Local configuration (paths, keys, settings) is missing or wrong."""

    default_code = ReasonCode.CONFIG_INVALID


class BrokerError(SaferError):
    """The Kafka-protocol broker could not be reached or started."""

    default_code = ReasonCode.BROKER_UNAVAILABLE
    default_retriable = True


class AuditError(SaferError):
    """The audit store could not be read or written."""

    default_code = ReasonCode.AUDIT_TAMPERED


class LogTamperedError(AuditError):
    """Verification of the audit log found problems.

    ``problems`` lists human-readable findings, the first naming the first bad
    sequence number.
    """

    def __init__(self, problems: list[str], *, hint: str = "") -> None:
        first = problems[0] if problems else "unknown problem"
        super().__init__(
            f"audit log failed verification: {first}"
            + (f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""),
            code=ReasonCode.AUDIT_TAMPERED,
            retriable=False,
            hint=hint or "preserve the store files as evidence and restore from a verified copy",
        )
        self.problems = problems

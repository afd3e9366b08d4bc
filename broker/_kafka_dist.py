"""The pinned Apache Kafka distribution: fetched with Maven, checked, found at start.

``deploy/kafka/pom.xml`` names Kafka's own artifacts (``org.apache.kafka:kafka_2.13``
and ``kafka-tools``, one version). ``install_kafka`` resolves it with
``mvn dependency:copy-dependencies`` into a staging folder, checks every jar
against ``deploy/kafka/kafka-<version>.sha256`` (a jar missing, extra or
different stops the install) and only then moves the folder into the cache.
``kafka_classpath`` checks the jars again at every start, so a jar changed in
the cache afterwards is refused too.

The cache is ``$SAFER_KAFKA_HOME`` or ``$XDG_CACHE_HOME/safer-exchange`` (by
default ``~/.cache/safer-exchange``), one folder per version.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from schemas import BrokerError, ReasonCode

__all__ = [
    "KAFKA_VERSION",
    "KafkaDistribution",
    "find_java",
    "install_kafka",
    "kafka_cache_dir",
    "kafka_distribution",
]

#: The Apache Kafka release SAFER Exchange runs (see deploy/kafka/pom.xml).
KAFKA_VERSION = "4.4.0"
_MIN_JAVA = 17
_INSTALL_HINT = "run `make kafka` (or `safer kafka install`), which fetches it with Maven"


def kafka_cache_dir() -> Path:
    """Where the pinned Kafka jars are kept (not in the repository)."""
    explicit = os.environ.get("SAFER_KAFKA_HOME")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "safer-exchange"


def _checksum_file(deploy_dir: Path) -> Path:
    return deploy_dir / "kafka" / f"kafka-{KAFKA_VERSION}.sha256"


def _expected(deploy_dir: Path) -> dict[str, str]:
    path = _checksum_file(deploy_dir)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        raise BrokerError(
            f"no checksum list {path} for Apache Kafka {KAFKA_VERSION}",
            code=ReasonCode.ENGINE_NOT_INSTALLED,
            retriable=False,
            hint="run from the repository root, or set SAFER_DEPLOY_DIR to its deploy/ folder",
        ) from None
    expected: dict[str, str] = {}
    for line in lines:
        if line.strip():
            digest, name = line.split(maxsplit=1)
            expected[name.strip().lstrip("*")] = digest.lower()
    return expected


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check(folder: Path, expected: dict[str, str]) -> list[str]:
    """Problems with the jars in ``folder`` against ``expected`` (empty when all match)."""
    found = {p.name: p for p in folder.glob("*.jar")} if folder.is_dir() else {}
    problems = [f"{name}: missing" for name in sorted(set(expected) - set(found))]
    problems += [f"{name}: not in the checksum list" for name in sorted(set(found) - set(expected))]
    for name in sorted(set(found) & set(expected)):
        if _sha256(found[name]) != expected[name]:
            problems.append(f"{name}: SHA-256 differs from the checksum list")
    return problems


@dataclass(frozen=True)
class KafkaDistribution:
    """A checked set of Kafka jars and the Java that runs them."""

    version: str
    libs: Path
    java: Path

    @property
    def classpath(self) -> str:
        return f"{self.libs}/*"


def find_java() -> Path:
    """The ``java`` to run Kafka with: ``$JAVA_HOME/bin/java`` or the one on PATH (17+)."""
    home = os.environ.get("JAVA_HOME")
    candidate = Path(home) / "bin" / "java" if home else None
    if candidate is None or not candidate.is_file():
        found = shutil.which("java")
        candidate = Path(found) if found else None
    if candidate is None:
        raise BrokerError(
            "Java is not installed; Apache Kafka needs Java 17 or newer",
            code=ReasonCode.ENGINE_NOT_INSTALLED,
            retriable=False,
            hint="install it (Debian: apt install openjdk-17-jre-headless) or set JAVA_HOME",
        )
    try:
        result = subprocess.run(  # noqa: S603 - fixed argv
            [str(candidate), "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BrokerError(
            f"cannot run {candidate} ({type(exc).__name__})",
            code=ReasonCode.ENGINE_NOT_INSTALLED,
            retriable=False,
            hint="check the Java installation, or set JAVA_HOME to a Java 17+ JDK or JRE",
        ) from None
    match = re.search(r'version "(\d+)', result.stderr + result.stdout)
    major = int(match.group(1)) if match else 0
    if major < _MIN_JAVA:
        raise BrokerError(
            f"{candidate} is Java {major or 'of unknown version'}; Apache Kafka "
            f"{KAFKA_VERSION} needs Java {_MIN_JAVA} or newer",
            code=ReasonCode.ENGINE_NOT_INSTALLED,
            retriable=False,
            hint="install OpenJDK 17 or set JAVA_HOME to it",
        )
    return candidate


def kafka_distribution(deploy_dir: Path) -> KafkaDistribution:
    """The installed, checked Kafka jars, or a BrokerError that says how to install them."""
    libs = kafka_cache_dir() / f"kafka-{KAFKA_VERSION}" / "libs"
    if not libs.is_dir():
        raise BrokerError(
            f"Apache Kafka {KAFKA_VERSION} is not installed (looked in {libs})",
            code=ReasonCode.ENGINE_NOT_INSTALLED,
            retriable=False,
            hint=_INSTALL_HINT,
        )
    problems = _check(libs, _expected(deploy_dir))
    if problems:
        raise BrokerError(
            f"the Apache Kafka jars in {libs} do not match the pinned checksums "
            f"({len(problems)} problem(s), first: {problems[0]})",
            code=ReasonCode.CHECKSUM_MISMATCH,
            retriable=False,
            hint=f"delete {libs.parent} and {_INSTALL_HINT}",
        )
    return KafkaDistribution(KAFKA_VERSION, libs, find_java())


def install_kafka(
    deploy_dir: Path,
    *,
    progress: Callable[[str], None] = lambda _: None,
    update_checksums: bool = False,
) -> KafkaDistribution:
    """Fetch the pinned Kafka jars with Maven (if not cached) and check them.

    ``update_checksums`` rewrites the checksum list from what Maven fetched: only
    for a maintainer moving to a new version, who then reviews and commits it.
    """
    target = kafka_cache_dir() / f"kafka-{KAFKA_VERSION}"
    pom = deploy_dir / "kafka" / "pom.xml"
    if not update_checksums and (target / "libs").is_dir():
        problems = _check(target / "libs", _expected(deploy_dir))
        if not problems:
            progress(f"Apache Kafka {KAFKA_VERSION} already installed in {target}")
            return KafkaDistribution(KAFKA_VERSION, target / "libs", find_java())
        progress(f"cached jars do not match the checksums ({problems[0]}); fetching again")
        shutil.rmtree(target)
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerError(
            "Maven (mvn) is not installed; it fetches Apache Kafka from Maven Central",
            code=ReasonCode.ENGINE_NOT_INSTALLED,
            retriable=False,
            hint="install it (Debian: apt install maven), then run `make kafka` again",
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".kafka-staging-", dir=target.parent))
    try:
        progress(f"fetching Apache Kafka {KAFKA_VERSION} jars from Maven Central (mvn)")
        result = subprocess.run(  # noqa: S603 - fixed argv
            [
                mvn,
                "-B",
                "-q",
                "--strict-checksums",  # Maven's own .sha1 check of each download
                "-f",
                str(pom),
                "dependency:copy-dependencies",
                f"-DoutputDirectory={staging / 'libs'}",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            tail = (result.stdout + result.stderr).strip().splitlines()[-5:]
            raise BrokerError(
                f"mvn could not fetch Apache Kafka {KAFKA_VERSION}: {' | '.join(tail)}",
                code=ReasonCode.ENGINE_NOT_INSTALLED,
                retriable=True,
                hint="check access to Maven Central (repo.maven.apache.org), then try again",
            )
        if update_checksums:
            lines = [f"{_sha256(p)}  {p.name}" for p in sorted((staging / "libs").glob("*.jar"))]
            _checksum_file(deploy_dir).write_text("\n".join(lines) + "\n", encoding="utf-8")
            progress(f"wrote {len(lines)} checksums to {_checksum_file(deploy_dir)}: review them")
        progress("checking every jar against the pinned SHA-256 list")
        problems = _check(staging / "libs", _expected(deploy_dir))
        if problems:
            raise BrokerError(
                f"fetched jars do not match the pinned checksums ({len(problems)} problem(s), "
                f"first: {problems[0]})",
                code=ReasonCode.CHECKSUM_MISMATCH,
                retriable=False,
                hint="do not run these jars; report it (the pom and the checksum list "
                "must change together)",
            )
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    progress(f"Apache Kafka {KAFKA_VERSION} installed in {target}")
    return KafkaDistribution(KAFKA_VERSION, target / "libs", find_java())

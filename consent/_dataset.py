"""The minimum dataset a concern needs before it can be routed.

A concern that lacks it is quarantined (MINIMUM_DATASET_MISSING) by the
router and rejected by the police adapter, with the list of what is missing.
Only field names are returned, never values.
"""

from __future__ import annotations

from schemas import ConcernModel, SubjectRole

__all__ = ["missing_minimum_dataset"]


def _blank(value: str | None) -> bool:
    return value is None or not value.strip()


def missing_minimum_dataset(concern: ConcernModel) -> list[str]:
    """Names of the minimum-dataset fields ``concern`` lacks (empty: routable).

    * ``subjects[role=CHILD]``: there is no CHILD subject.
    * ``subjects[i].date_of_birth_or_identifier``: CHILD subject ``i`` (its index
      in ``subjects``) has no date of birth, NHS number or police person id.
    * ``subjects[i].address_or_incident_location``: CHILD subject ``i`` has no
      address with an LA code or postcode, and the concern's
      ``incident_location`` has neither either, so no partnership can be found.
    * ``narrative``: empty.
    * ``officer.name``, ``officer.email_or_phone``: the officer cannot be contacted.
    """
    missing: list[str] = []
    location = concern.incident_location
    located = location is not None and not (_blank(location.la_code) and _blank(location.postcode))
    children = [(i, s) for i, s in enumerate(concern.subjects) if s.role is SubjectRole.CHILD]
    if not children:
        missing.append("subjects[role=CHILD]")
    for index, child in children:
        if (
            child.date_of_birth is None
            and _blank(child.nhs_number)
            and _blank(child.police_person_id)
        ):
            missing.append(f"subjects[{index}].date_of_birth_or_identifier")
        address = child.address
        housed = address is not None and not (_blank(address.la_code) and _blank(address.postcode))
        if not housed and not located:
            missing.append(f"subjects[{index}].address_or_incident_location")
    if _blank(concern.narrative):
        missing.append("narrative")
    if _blank(concern.officer.name):
        missing.append("officer.name")
    if _blank(concern.officer.email) and _blank(concern.officer.phone):
        missing.append("officer.email_or_phone")
    return missing

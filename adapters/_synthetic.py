"""Deterministic synthetic concerns for the demo, the tests and the benchmarks.

Every person generated here is invented: names come from small lists of common
UK given and family names, NHS numbers from the 999 000 0000 – 999 999 9999
range that NHS England reserves for testing (with a correct Modulus 11 check
digit), phone numbers from Ofcom's drama ranges (07700 900xxx, 01632 960xxx),
and e-mail addresses from ``example`` domains. Nothing is real.

``synthetic_concerns(n, seed=..., now=...)`` returns police-JSON dicts, the JSON
form of :class:`schemas.ConcernModel` (``ConcernModel.model_validate`` accepts
them, ``json.dumps`` writes them, and ``model_dump(mode="json")`` of the model
gives the same dict back). The output depends only on ``n``, ``seed``, ``now``
and ``directory_schools``: one ``random.Random(seed)`` drives everything, and
the clock is never read.

Across ``n`` the mix is roughly (per concern): domestic abuse 35% and every
other concern type; HIGH 25% / MEDIUM 45% / LOW 30%; 1–3 children aged 0–17,
or (8%) one young adult aged 18–24, some of them care leavers (young adults use
the ``CHILD`` role: they are the subject of the concern, and consent/ applies
the adult-at-risk basis by age); a parent/carer, and often an alleged
perpetrator; 10% cross-border (incident LA differs from residence LA); 6%
looked-after children placed out of area; 4% home-educated; 5% straddling
postcode districts (PO6, SO16, SO18) without an LA code; about 20% of
addresses without an LA code in all; consent NOT_SOUGHT most often; 5%
third-party protection; 2% restricted.

``synthetic_people(concerns)`` lists the personal values the concerns carry,
so that tests can scan logs, Kafka keys and headers for leaks.
"""

from __future__ import annotations

import itertools
import random
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

from schemas import LA_CODES, ConcernType, ConsentState, RiskGrade, SubjectRole, age_on

__all__ = ["DIRECTORY_SCHOOLS", "nhs_check_digit", "synthetic_concerns", "synthetic_people"]

#: School URNs of the education recipients in deploy/directory.toml, per
#: partnership. Keep in sync with the directory (a unit test compares them).
DIRECTORY_SCHOOLS: Mapping[str, tuple[str, ...]] = {
    "hampshire": ("116439", "116205"),
    "isle-of-wight": ("118166", "118204"),
    "portsmouth": ("116330", "116273"),
    "southampton": ("116441", "116178"),
}

SOURCE_AGENCY = "hampshire-constabulary"

_LA_OF: dict[str, str] = {str(lscp): code for code, lscp in LA_CODES.items()}

# ----------------------------------------------------------------------------- places


@dataclass(frozen=True)
class _Place:
    district: str
    town: str


def _places(town_by_district: Sequence[tuple[str, str]]) -> tuple[_Place, ...]:
    return tuple(_Place(district, town) for district, town in town_by_district)


#: Postcode districts that belong to one partnership only (deploy/postcode_districts.toml).
_PLACES: dict[str, tuple[_Place, ...]] = {
    "hampshire": _places(
        [
            ("SO50", "Eastleigh"),
            ("SO53", "Chandler's Ford"),
            ("SO22", "Winchester"),
            ("SO23", "Winchester"),
            ("SO40", "Totton"),
            ("SO41", "Lymington"),
            ("SO51", "Romsey"),
            ("PO7", "Waterlooville"),
            ("PO8", "Waterlooville"),
            ("PO9", "Havant"),
            ("PO12", "Gosport"),
            ("PO13", "Gosport"),
            ("PO14", "Fareham"),
            ("PO16", "Fareham"),
            ("GU14", "Farnborough"),
            ("GU11", "Aldershot"),
            ("GU51", "Fleet"),
            ("GU34", "Alton"),
            ("GU32", "Petersfield"),
            ("RG21", "Basingstoke"),
            ("RG22", "Basingstoke"),
            ("RG24", "Basingstoke"),
            ("SP10", "Andover"),
            ("BH24", "Ringwood"),
            ("BH25", "New Milton"),
        ]
    ),
    "isle-of-wight": _places(
        [
            ("PO30", "Newport"),
            ("PO31", "Cowes"),
            ("PO32", "East Cowes"),
            ("PO33", "Ryde"),
            ("PO34", "Seaview"),
            ("PO35", "Bembridge"),
            ("PO36", "Sandown"),
            ("PO37", "Shanklin"),
            ("PO38", "Ventnor"),
            ("PO39", "Totland Bay"),
            ("PO40", "Freshwater"),
            ("PO41", "Yarmouth"),
        ]
    ),
    "portsmouth": _places(
        [
            ("PO1", "Portsmouth"),
            ("PO2", "Portsmouth"),
            ("PO3", "Portsmouth"),
            ("PO4", "Southsea"),
            ("PO5", "Southsea"),
        ]
    ),
    "southampton": _places(
        [
            ("SO14", "Southampton"),
            ("SO15", "Southampton"),
            ("SO17", "Southampton"),
            ("SO19", "Southampton"),
        ]
    ),
}

#: Districts that straddle a partnership boundary, with their candidate partnerships.
_STRADDLING: tuple[tuple[_Place, tuple[str, ...]], ...] = (
    (_Place("PO6", "Portsmouth"), ("portsmouth", "hampshire")),
    (_Place("SO16", "Southampton"), ("southampton", "hampshire")),
    (_Place("SO18", "Southampton"), ("southampton", "hampshire")),
)

#: Where children live, roughly in proportion to the partnerships' populations.
_RESIDENCE_WEIGHTS: tuple[tuple[str, float], ...] = (
    ("hampshire", 0.46),
    ("southampton", 0.21),
    ("portsmouth", 0.20),
    ("isle-of-wight", 0.13),
)

_STREETS = (
    "Victoria Road",
    "Church Lane",
    "Station Road",
    "Queens Road",
    "Albert Road",
    "Highfield Road",
    "Mill Lane",
    "Elm Grove",
    "Chestnut Avenue",
    "Manor Way",
    "Orchard Close",
    "St Mary's Road",
    "Kingfisher Drive",
    "Beech Crescent",
    "Nelson Road",
    "Osborne Road",
    "Windsor Close",
    "Meadow View",
    "Harbour Way",
    "London Road",
    "Shaftesbury Avenue",
    "Laburnum Grove",
    "Heathfield Road",
    "Lavender Close",
    "Copse Lane",
    "Sandringham Road",
)

_INWARD_LETTERS = "ABDEFGHJLNPQRSTUWXYZ"  # letters used in inward codes (no C I K M O V)

_PUBLIC_PLACES = (
    "Town centre",
    "Bus station",
    "Railway station",
    "Shopping centre car park",
    "Recreation ground",
    "Skate park",
    "Seafront",
    "Fast-food restaurant",
)

# ----------------------------------------------------------------------------- people

# Chosen to avoid words that could appear in log text ("Will", "Grace", "Young").
_GIRLS = (
    "Olivia", "Amelia", "Isla", "Ava", "Mia", "Ivy", "Lily", "Isabella", "Sophia",
    "Freya", "Poppy", "Evie", "Ella", "Florence", "Chloe", "Emily", "Sophie", "Ruby",
    "Evelyn", "Zara", "Aisha", "Amira", "Maya", "Jessica", "Harriet", "Niamh", "Layla",
)  # fmt: skip
_BOYS = (
    "Oliver", "George", "Noah", "Arthur", "Muhammad", "Leo", "Harry", "Oscar", "Archie",
    "Henry", "Theodore", "Freddie", "Jack", "Charlie", "Thomas", "Jacob", "Alfie",
    "Finley", "Isaac", "Joshua", "Riley", "Ethan", "Logan", "Tyler", "Kai", "Reuben",
)  # fmt: skip
_WOMEN = (
    "Sarah", "Emma", "Laura", "Rebecca", "Claire", "Gemma", "Nicola", "Lisa", "Michelle",
    "Samantha", "Hannah", "Jade", "Danielle", "Natalie", "Stacey", "Kerry", "Leanne",
    "Amy", "Katie", "Zoe",
)  # fmt: skip
_MEN = (
    "James", "David", "Daniel", "Christopher", "Matthew", "Andrew", "Craig", "Ryan",
    "Jamie", "Darren", "Wayne", "Stuart", "Paul", "Carl", "Shaun", "Gareth", "Kieran",
    "Liam", "Connor", "Jordan", "Lee",
)  # fmt: skip
_FAMILY = (
    "Smith", "Jones", "Taylor", "Williams", "Wilson", "Johnson", "Davies", "Robinson",
    "Thompson", "Evans", "Walker", "Roberts", "Wright", "Thomas", "Hughes", "Edwards",
    "Lewis", "Harris", "Jackson", "Clarke", "Patel", "Khan", "Ahmed", "Singh",
    "Mitchell", "Morgan", "Cooper", "Parker", "Watson", "Harrison", "Phillips",
    "Bennett", "Carter", "Lloyd", "Murphy", "Kelly", "Campbell", "Stewart", "Collins",
    "Morris", "Chapman", "Fletcher", "Gibson", "Rogers", "Kowalski", "Nowak", "Okafor",
    "Mensah",
)  # fmt: skip

# Officers come from lists disjoint from the subjects' lists, so a leak scan for
# subjects' names never trips on an officer's name in a legitimate place.
_OFFICER_GIVEN = (
    "Rachel", "Joanne", "Helen", "Victoria", "Alison", "Fiona", "Simon", "Richard",
    "Neil", "Graham", "Adrian", "Steven", "Philip", "Karen",
)  # fmt: skip
_OFFICER_FAMILY = (
    "Ashworth", "Bramley", "Cartwright", "Dunmore", "Ellwood", "Fairbairn", "Hollins",
    "Ingram", "Jessop", "Lockwood", "Merriman", "Northcott", "Pennington", "Redfern",
    "Stanton", "Tindall", "Whitlock",
)  # fmt: skip
_RANKS = (("PC", 0.6), ("DC", 0.25), ("PS", 0.1), ("DS", 0.05))
_UNITS: dict[str, tuple[str, ...]] = {
    "hampshire": (
        "Eastleigh Response and Patrol",
        "Basingstoke Neighbourhood Policing Team",
        "Public Protection Unit, Fareham",
        "Missing and Exploited Children Team, Winchester",
        "Havant CID",
    ),
    "isle-of-wight": (
        "Isle of Wight Response and Patrol",
        "Newport Neighbourhood Policing Team",
        "Public Protection Unit, Isle of Wight",
    ),
    "portsmouth": (
        "Portsmouth Response and Patrol",
        "Southsea Neighbourhood Policing Team",
        "Public Protection Unit, Portsmouth",
        "Missing and Exploited Children Team, Portsmouth",
    ),
    "southampton": (
        "Southampton Response and Patrol",
        "Shirley Neighbourhood Policing Team",
        "Public Protection Unit, Southampton",
        "Southampton CID",
    ),
}

# ----------------------------------------------------------------------------- concern mix

_TYPE_WEIGHTS: tuple[tuple[ConcernType, float], ...] = (
    (ConcernType.DOMESTIC_ABUSE, 35),
    (ConcernType.NEGLECT, 12),
    (ConcernType.PHYSICAL_ABUSE, 8),
    (ConcernType.EMOTIONAL_ABUSE, 6),
    (ConcernType.SEXUAL_ABUSE, 4),
    (ConcernType.CHILD_SEXUAL_EXPLOITATION, 4),
    (ConcernType.CHILD_CRIMINAL_EXPLOITATION, 5),
    (ConcernType.MISSING, 8),
    (ConcernType.ONLINE_GROOMING, 4),
    (ConcernType.RADICALISATION, 2),
    (ConcernType.KNIFE_SERIOUS_VIOLENCE, 4),
    (ConcernType.YOUTH_OFFENDING, 5),
    (ConcernType.OTHER, 3),
)
_GRADE_WEIGHTS: tuple[tuple[RiskGrade, float], ...] = (
    (RiskGrade.HIGH, 25),
    (RiskGrade.MEDIUM, 45),
    (RiskGrade.LOW, 30),
)
_CONSENT_WEIGHTS: tuple[tuple[ConsentState, float], ...] = (
    (ConsentState.NOT_SOUGHT, 45),
    (ConsentState.GIVEN, 25),
    (ConsentState.REFUSED, 17),
    (ConsentState.WITHDRAWN, 8),
    (ConsentState.OVERRIDDEN, 5),
)

_T = ConcernType
#: Ages (inclusive) of the children each concern type is about.
_AGE_RANGE: dict[ConcernType, tuple[int, int]] = {
    _T.DOMESTIC_ABUSE: (0, 17),
    _T.NEGLECT: (0, 15),
    _T.PHYSICAL_ABUSE: (0, 17),
    _T.EMOTIONAL_ABUSE: (2, 17),
    _T.SEXUAL_ABUSE: (3, 17),
    _T.CHILD_SEXUAL_EXPLOITATION: (11, 17),
    _T.CHILD_CRIMINAL_EXPLOITATION: (12, 17),
    _T.MISSING: (10, 17),
    _T.ONLINE_GROOMING: (9, 17),
    _T.RADICALISATION: (12, 17),
    _T.KNIFE_SERIOUS_VIOLENCE: (13, 17),
    _T.YOUTH_OFFENDING: (10, 17),
    _T.OTHER: (0, 17),
}
#: Types that usually concern a whole family (1–3 children).
_FAMILY_TYPES = frozenset(
    {_T.DOMESTIC_ABUSE, _T.NEGLECT, _T.PHYSICAL_ABUSE, _T.EMOTIONAL_ABUSE, _T.OTHER}
)
#: Types a concern about a young adult (18–24) can have, and their share of those types.
_YOUNG_ADULT_TYPES = frozenset(
    {
        _T.DOMESTIC_ABUSE,
        _T.SEXUAL_ABUSE,
        _T.CHILD_SEXUAL_EXPLOITATION,
        _T.CHILD_CRIMINAL_EXPLOITATION,
        _T.MISSING,
        _T.RADICALISATION,
        _T.KNIFE_SERIOUS_VIOLENCE,
        _T.OTHER,
    }
)
_YOUNG_ADULT_SHARE = 0.08 / 0.65  # those types are 65% of all concerns
#: Chance of an alleged perpetrator among the subjects, per type.
_PERPETRATOR: dict[ConcernType, float] = {
    _T.DOMESTIC_ABUSE: 0.8,
    _T.PHYSICAL_ABUSE: 0.6,
    _T.SEXUAL_ABUSE: 0.6,
    _T.CHILD_SEXUAL_EXPLOITATION: 0.5,
    _T.CHILD_CRIMINAL_EXPLOITATION: 0.5,
    _T.ONLINE_GROOMING: 0.4,
    _T.KNIFE_SERIOUS_VIOLENCE: 0.3,
    _T.EMOTIONAL_ABUSE: 0.3,
}
#: Types where the child is likely to be known to the police already.
_POLICE_KNOWN = frozenset(
    {
        _T.YOUTH_OFFENDING,
        _T.KNIFE_SERIOUS_VIOLENCE,
        _T.CHILD_CRIMINAL_EXPLOITATION,
        _T.MISSING,
    }
)

# Scenario shares (per concern).
P_CROSS_BORDER = 0.10
P_PLACED_OUT_OF_AREA = 0.06
P_STRADDLING = 0.05
P_NO_LA_CODE = 0.16  # of the remaining concerns; with the straddling ones about 20% in all
P_HOME_EDUCATED = 0.045
P_SCHOOL_URN = 0.88
P_THIRD_PARTY = 0.05
P_RESTRICTED = 0.02

# ----------------------------------------------------------------------------- text

_Text = tuple[tuple[str, ...], tuple[str, ...]]  # (openings, follow-ups)

_NARRATIVES: dict[ConcernType, _Text] = {
    _T.DOMESTIC_ABUSE: (
        (
            "Police attended the home address in {town} following a 999 call reporting a "
            "verbal and physical argument between {victim} and {perp}.",
            "{victim} reported that {perp} had pushed them against a wall during an argument "
            "at the home address in {town}.",
            "Officers were called to the home address in {town} by a neighbour who heard "
            "shouting and items being thrown; {victim} and {perp} were both present.",
        ),
        (
            "{child} ({age}) was in the house at the time and was heard crying upstairs.",
            "{perp} had left before officers arrived; {victim} had a visible injury to the arm "
            "and declined medical treatment.",
            "This is the {nth} domestic incident reported at the address in the last 12 months.",
            "A DASH risk assessment was completed and graded {dash}.",
            "{child} ({age}) witnessed the incident from the hallway.",
        ),
    ),
    _T.NEGLECT: (
        (
            "Officers attending a welfare check at the home in {town} found the property in a "
            "poor state, with little food in the kitchen and rubbish throughout.",
            "A neighbour reported that {child} ({age}) had been left at home alone for several "
            "hours in the evening; officers attended the address in {town}.",
        ),
        (
            "{child} ({age}) was dressed in dirty clothing unsuitable for the weather.",
            "{carer} appeared to be under the influence of alcohol and struggled to engage.",
            "There were no working smoke alarms and exposed wiring in the living room.",
        ),
    ),
    _T.PHYSICAL_ABUSE: (
        (
            "{child} ({age}) told a member of staff at a youth club in {town} that {adult} had "
            "hit them, leaving bruising to the upper arm.",
            "Officers were called to an address in {town} after {child} ({age}) was seen with "
            "a facial injury that {carer} could not explain.",
        ),
        (
            "Officers observed marks consistent with the account.",
            "A child protection medical has been requested.",
            "{adult} was arrested on suspicion of assault and has been released on bail.",
        ),
    ),
    _T.EMOTIONAL_ABUSE: (
        (
            "Neighbours in {town} reported frequent shouting and threats directed at {child} "
            "({age}) at the home address.",
            "{child} ({age}) was found walking alone in {town} late in the evening and said "
            "they had been told to leave the house by {carer}.",
        ),
        (
            "{child} appeared anxious and said they were scared to go home.",
            "{carer} described {child} in derogatory terms in front of officers.",
        ),
    ),
    _T.SEXUAL_ABUSE: (
        (
            "{child} ({age}) made a disclosure of sexual abuse to a trusted adult, naming {adult}.",
            "{carer} reported to police in {town} that {child} ({age}) had disclosed being "
            "touched inappropriately by {adult}.",
        ),
        (
            "An Achieving Best Evidence interview is being arranged.",
            "{child} is currently staying with a relative while enquiries continue.",
        ),
    ),
    _T.CHILD_SEXUAL_EXPLOITATION: (
        (
            "{child} ({age}) was found in a car in {town} late at night with two adult males "
            "not known to the family.",
            "{child} ({age}) has been seen repeatedly at an address in {town} associated with "
            "older males and has returned home under the influence of alcohol.",
        ),
        (
            "{child} had new clothing and a mobile phone that the family cannot account for.",
            "A child exploitation risk assessment has been completed.",
        ),
    ),
    _T.CHILD_CRIMINAL_EXPLOITATION: (
        (
            "{child} ({age}) was stopped in {town} and found in possession of a quantity of "
            "wraps and cash, suspected to be linked to a county lines drug line.",
            "{child} ({age}) was found at an address in {town} being used to supply drugs, "
            "far from home and with no means of getting back.",
        ),
        (
            "{child} has been reported missing several times in the last month.",
            "A National Referral Mechanism referral is being considered.",
        ),
    ),
    _T.MISSING: (
        (
            "{child} ({age}) was reported missing by {carer} after failing to return home "
            "from school.",
            "{child} ({age}) went missing overnight and was found the next morning in {town}.",
        ),
        (
            "{child} was located {hours} hours later in {town} and returned home; a return "
            "home interview is needed.",
            "This is the {nth} missing episode in the last three months.",
        ),
    ),
    _T.ONLINE_GROOMING: (
        (
            "{child} ({age}) has been receiving sexualised messages from an adult on a social "
            "media platform who asked them to keep the contact secret.",
            "{carer} found messages on {child}'s ({age}) phone from an adult asking for "
            "images and to meet in {town}.",
        ),
        (
            "Devices have been seized for examination.",
            "{child} has been given advice about online safety and how to report contact.",
        ),
    ),
    _T.RADICALISATION: (
        (
            "{carer} raised concerns that {child} ({age}) has been viewing and sharing extremist "
            "material online.",
            "{child} ({age}) was overheard in {town} expressing support for a proscribed group.",
        ),
        ("A Prevent referral has been made.", "{child} has become increasingly isolated."),
    ),
    _T.KNIFE_SERIOUS_VIOLENCE: (
        (
            "{child} ({age}) was found in possession of a bladed article near the bus station "
            "in {town}.",
            "{child} ({age}) was assaulted by a group of youths in {town} and suffered a stab "
            "wound to the leg.",
        ),
        (
            "{child} said they carry a knife for protection after being threatened.",
            "There are concerns about {child}'s association with older peers.",
        ),
    ),
    _T.YOUTH_OFFENDING: (
        (
            "{child} ({age}) was arrested for shoplifting and criminal damage in {town} and "
            "interviewed with an appropriate adult.",
            "{child} ({age}) was arrested in {town} after a fight outside a shop.",
        ),
        (
            "This is {child}'s third arrest this year; there are concerns about peer associations.",
            "{carer} said they are struggling to manage {child}'s behaviour.",
        ),
    ),
    _T.OTHER: (
        (
            "Officers attended a report of concern for the welfare of {child} ({age}) in {town}.",
            "{carer} was found in mental health crisis at the home in {town} while caring for "
            "{child} ({age}).",
        ),
        (
            "A referral has been made to the mental health crisis team.",
            "A relative has agreed to stay at the address for the next few days.",
        ),
    ),
}

_SAID: dict[ConcernType, tuple[str, ...]] = {
    _T.DOMESTIC_ABUSE: (
        "I hid in my room when the shouting started.",
        "I don't like it when they fight. I want everyone to be safe.",
        "It happens a lot. I put my headphones on.",
    ),
    _T.NEGLECT: (
        "I had crisps for tea.",
        "Mum's been poorly so I look after my little brother.",
        "Nobody was home when I got back.",
    ),
    _T.PHYSICAL_ABUSE: ("It hurts when I lift my arm.", "I'm not allowed to say what happened."),
    _T.EMOTIONAL_ABUSE: ("They say I'm stupid all the time.", "I don't want to go home."),
    _T.SEXUAL_ABUSE: ("I told my teacher because I didn't know who else to tell.",),
    _T.CHILD_SEXUAL_EXPLOITATION: ("They're my friends, they look after me.",),
    _T.CHILD_CRIMINAL_EXPLOITATION: ("If I don't go they'll come for my family.",),
    _T.MISSING: ("I just needed to get away for a bit.", "I was at a friend's house."),
    _T.ONLINE_GROOMING: ("He said he was 15 and that I was special.",),
    _T.RADICALISATION: ("Nobody else listens to me like they do.",),
    _T.KNIFE_SERIOUS_VIOLENCE: ("Everyone carries one. You have to.",),
    _T.YOUTH_OFFENDING: ("I was bored. There's nothing to do round here.",),
    _T.OTHER: ("I'm worried about my mum.",),
}
_OBSERVED = (
    "Appeared withdrawn and avoided eye contact with officers.",
    "Was clingy towards {carer} and became upset when officers spoke to them.",
    "Was calm and chatty with officers and played with toys.",
    "Appeared tired and hungry; ate quickly when offered food.",
    "Flinched when voices were raised.",
)
_OBSERVED_OLDER = (
    "Was tearful but engaged well with officers.",
    "Appeared guarded and gave short answers.",
    "Was angry and did not want to speak to officers at first.",
    "Appeared tired and had not eaten all day.",
    "Kept checking their phone and seemed frightened of who was messaging.",
)
_OBSERVED_BABY = (
    "Baby was unsettled, startled at loud noises and was difficult to soothe.",
    "Infant appeared well fed but had a heavily soiled nappy and a red rash.",
    "Baby was quiet, made little eye contact and did not respond to voices.",
    "Baby was asleep in a car seat in the hallway throughout the incident.",
)
_ACTIONS: dict[ConcernType, tuple[str, ...]] = {
    _T.DOMESTIC_ABUSE: (
        "Suspect arrested for assault. Safeguarding advice given and DASH completed.",
        "Suspect left the scene; circulated as wanted. Victim referred to an IDVA.",
        "Domestic Violence Protection Notice issued. Bail conditions: no contact.",
    ),
    _T.NEGLECT: (
        "Children's welfare checked and a relative asked to stay at the address.",
        "Police protection considered and not used; children seen and spoken to.",
    ),
    _T.PHYSICAL_ABUSE: ("Injuries photographed. Strategy discussion requested.",),
    _T.EMOTIONAL_ABUSE: ("Child returned home after a discussion with the parent.",),
    _T.SEXUAL_ABUSE: ("Strategy discussion requested. Suspect not yet spoken to.",),
    _T.CHILD_SEXUAL_EXPLOITATION: ("Child taken home. Vehicle details recorded.",),
    _T.CHILD_CRIMINAL_EXPLOITATION: ("Drugs and cash seized. Child returned home by officers.",),
    _T.MISSING: ("Safe and well check completed. Return home interview requested.",),
    _T.ONLINE_GROOMING: ("Devices seized. Account details passed to the online team.",),
    _T.RADICALISATION: ("Prevent referral submitted.",),
    _T.KNIFE_SERIOUS_VIOLENCE: ("Knife seized. Child interviewed with an appropriate adult.",),
    _T.YOUTH_OFFENDING: ("Released under investigation. Youth justice informed.",),
    _T.OTHER: ("Ambulance called for the parent. Child cared for by a relative.",),
}
_NOT_SOUGHT_REASONS = (
    ("seeking consent would place the child at risk", 0.7),
    ("seeking consent would place the child at risk of significant harm", 0.15),
    ("seeking consent would prejudice the prevention or detection of crime", 0.15),
)
_CONSENT_REASONS: dict[ConsentState, str] = {
    ConsentState.GIVEN: "parent/carer agreed to the information being shared with partners",
    ConsentState.REFUSED: "parent/carer declined consent to share",
    ConsentState.WITHDRAWN: "consent given at the scene was withdrawn by the parent/carer",
    ConsentState.OVERRIDDEN: "consent refused; overridden because the child is at risk of "
    "significant harm",
}
_NTH = ("second", "third", "fourth", "fifth")
_DASH = {RiskGrade.HIGH: "high", RiskGrade.MEDIUM: "medium", RiskGrade.LOW: "standard"}

#: Issue 16: the coded risk factors a concern of each type usually carries.
_FACTORS: dict[ConcernType, tuple[str, ...]] = {
    _T.DOMESTIC_ABUSE: ("DOMESTIC_ABUSE",),
    _T.NEGLECT: ("NEGLECT", "PARENTAL_SUBSTANCE_MISUSE"),
    _T.EMOTIONAL_ABUSE: ("PARENTAL_MENTAL_HEALTH",),
    _T.CHILD_SEXUAL_EXPLOITATION: ("CHILD_SEXUAL_EXPLOITATION", "MISSING_EPISODES"),
    _T.CHILD_CRIMINAL_EXPLOITATION: ("CHILD_CRIMINAL_EXPLOITATION", "COUNTY_LINES"),
    _T.MISSING: ("MISSING_EPISODES",),
    _T.ONLINE_GROOMING: ("ONLINE_HARM",),
    _T.RADICALISATION: ("RADICALISATION", "ONLINE_HARM"),
}
#: A DASH score inside each grade's band (docs/RISK.md), varied by the concern id.
_DASH_SCORES = {RiskGrade.HIGH: (14, 27), RiskGrade.MEDIUM: (10, 13), RiskGrade.LOW: (2, 9)}
_RATIONALES = {
    RiskGrade.HIGH: "risk of serious harm: escalating incidents and the child was present",
    RiskGrade.MEDIUM: "identifiable indicators of harm; protective factors in place",
    RiskGrade.LOW: "no current indicators of serious harm",
}


def _risk_assessments(
    concern_id: str,
    ctype: ConcernType,
    grade: RiskGrade,
    children: Sequence[dict[str, Any]],
    assessed_by: str,
    assessed_at: str,
) -> list[dict[str, Any]]:
    """One assessment per child (concern v3), derived without drawing from the generator,
    so a seed gives the same people, places and decisions as before v3."""
    spread = int(concern_id.replace("-", "")[:8], 16)
    factors = list(_FACTORS.get(ctype, ()))
    out = []
    for index, person in enumerate(children):
        dash = ctype is _T.DOMESTIC_ABUSE
        low, high = _DASH_SCORES[grade]
        out.append(
            {
                "subject_ref": person["subject_ref"],
                "grade": grade.value,
                "rationale": _RATIONALES[grade],
                "method": "DASH" if dash else "PROFESSIONAL_JUDGEMENT",
                "dash_score": low + (spread + index) % (high - low + 1) if dash else None,
                "tool_name": None,
                "factors": factors,
                "missing_episodes": 1 + spread % 4 if "MISSING_EPISODES" in factors else None,
                "assessed_by": assessed_by,
                "assessed_at": assessed_at,
            }
        )
    return out


# ----------------------------------------------------------------------------- helpers


def nhs_check_digit(nine_digits: str) -> int | None:
    """The NHS number Modulus 11 check digit, or None when no valid one exists (10)."""
    total = sum(int(d) * w for d, w in zip(nine_digits, range(10, 1, -1), strict=True))
    check = 11 - total % 11
    if check == 11:
        return 0
    return None if check == 10 else check


_V = TypeVar("_V")


def _weighted(rng: random.Random, choices: Sequence[tuple[_V, float]]) -> _V:
    values = [value for value, _ in choices]
    weights = [weight for _, weight in choices]
    return rng.choices(values, weights=weights, k=1)[0]


def _years_before(day: date, years: int) -> date:
    try:
        return day.replace(year=day.year - years)
    except ValueError:  # 29 February
        return day.replace(year=day.year - years, month=3, day=1)


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass
class _Home:
    lscp: str  # the partnership the child belongs to (for schools and units)
    address: dict[str, Any]


class _Generator:
    def __init__(self, rng: random.Random, now: datetime, schools: Mapping[str, Sequence[str]]):
        self.rng = rng
        self.now = now
        self.schools = schools
        # Adults' phone numbers come from a counter, not the random stream, so
        # adding them left every other generated value as it was.
        self._phones = itertools.count()

    # -- identifiers

    def nhs_number(self) -> str:
        while True:
            nine = f"999{self.rng.randrange(1_000_000):06d}"
            check = nhs_check_digit(nine)
            if check is not None:
                return f"{nine}{check}"

    def police_person_id(self) -> str:
        return f"HC-P-{self.rng.randrange(10_000_000):07d}"

    def dob(self, age: int, on: date) -> str:
        """A date of birth giving exactly ``age`` on ``on``; babies are 6+ weeks old."""
        latest = _years_before(on, age) if age else on - timedelta(days=42)
        earliest = _years_before(on, age + 1) + timedelta(days=1)
        born = earliest + timedelta(days=self.rng.randint(0, (latest - earliest).days))
        assert age_on(born, on) == age
        return born.isoformat()

    # -- places

    def postcode(self, district: str) -> str:
        letters = "".join(self.rng.choice(_INWARD_LETTERS) for _ in range(2))
        return f"{district} {self.rng.randint(1, 9)}{letters}"

    def address(self, lscp: str, *, with_la_code: bool) -> dict[str, Any]:
        place = self.rng.choice(_PLACES[lscp])
        return self._address(place, _LA_OF[lscp] if with_la_code else None)

    def _address(self, place: _Place, la_code: str | None) -> dict[str, Any]:
        rng = self.rng
        line2 = f"Flat {rng.randint(1, 24)}" if rng.random() < 0.15 else None
        return {
            "line1": f"{rng.randint(1, 180)} {rng.choice(_STREETS)}",
            "line2": line2,
            "town": place.town,
            "postcode": self.postcode(place.district),
            "la_code": la_code,
        }

    def straddling_home(self) -> _Home:
        place, candidates = self.rng.choice(_STRADDLING)
        return _Home(self.rng.choice(candidates), self._address(place, None))

    # -- people

    def subject(
        self,
        ref: str,
        role: SubjectRole,
        *,
        given: str,
        family: str,
        dob: str | None,
        nhs: bool,
        police: bool,
        address: dict[str, Any] | None,
        phone: bool = False,
    ) -> dict[str, Any]:
        return {
            "subject_ref": ref,
            "role": role.value,
            "given_name": given,
            "family_name": family,
            "date_of_birth": dob,
            "nhs_number": self.nhs_number() if nhs else None,
            "police_person_id": self.police_person_id() if police else None,
            # Ofcom's range for drama (07700 900000-900999): never a real number.
            "phone": f"07700 900{next(self._phones) % 1000:03d}" if phone else None,
            "address": dict(address) if address is not None else None,
            "school_urn": None,
            "looked_after": False,
            "responsible_la": None,
            "home_educated": False,
            "care_leaver": False,
        }

    def given_name(self, female: bool, *, adult: bool) -> str:
        if adult:
            return self.rng.choice(_WOMEN if female else _MEN)
        return self.rng.choice(_GIRLS if female else _BOYS)

    # -- one concern

    def concern(self) -> dict[str, Any]:
        rng = self.rng
        concern_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        ctype = _weighted(rng, _TYPE_WEIGHTS)
        grade = _weighted(rng, _GRADE_WEIGHTS)
        reported = (self.now - timedelta(seconds=rng.randint(60, 2 * 86400 - 60))).replace(
            microsecond=0
        )
        if ctype in (_T.SEXUAL_ABUSE, _T.ONLINE_GROOMING, _T.RADICALISATION) and rng.random() < 0.3:
            occurred = reported - timedelta(days=rng.randint(2, 30), minutes=rng.randint(0, 1439))
        else:
            occurred = reported - timedelta(minutes=rng.randint(10, 72 * 60))
        today = reported.date()

        # Where the family lives, and the placement scenario.
        scenario = rng.random()
        cross_border = scenario < P_CROSS_BORDER
        placed_out = P_CROSS_BORDER <= scenario < P_CROSS_BORDER + P_PLACED_OUT_OF_AREA
        straddling = (
            P_CROSS_BORDER + P_PLACED_OUT_OF_AREA
            <= scenario
            < P_CROSS_BORDER + P_PLACED_OUT_OF_AREA + P_STRADDLING
        )
        if straddling:
            home = self.straddling_home()
        else:
            lscp = _weighted(rng, _RESIDENCE_WEIGHTS)
            with_code = cross_border or placed_out or rng.random() >= P_NO_LA_CODE
            home = _Home(lscp, self.address(lscp, with_la_code=with_code))
        responsible_la: str | None = None
        if placed_out:
            responsible_la = _LA_OF[rng.choice([p for p in _LA_OF if p != home.lscp])]
        elif rng.random() < 0.02:
            responsible_la = home.address["la_code"] or _LA_OF[home.lscp]  # in-area placement

        # Children (or one young adult).
        young_adult = ctype in _YOUNG_ADULT_TYPES and rng.random() < _YOUNG_ADULT_SHARE
        family = rng.choice(_FAMILY)
        if young_adult:
            ages = [rng.randint(18, 24)]
        else:
            low, high = _AGE_RANGE[ctype]
            if ctype in _FAMILY_TYPES:
                count = _weighted(rng, ((1, 0.5), (2, 0.33), (3, 0.17)))
            else:
                count = _weighted(rng, ((1, 0.85), (2, 0.15)))
            ages = sorted((rng.randint(low, high) for _ in range(count)), reverse=True)
        subjects: list[dict[str, Any]] = []
        for age in ages:
            female = rng.random() < 0.5
            has_dob = young_adult or rng.random() >= 0.02
            police_p = 0.8 if ctype in _POLICE_KNOWN else 0.2
            child = self.subject(
                f"S{len(subjects) + 1}",
                SubjectRole.CHILD,
                given=self.given_name(female, adult=False),
                family=family,
                dob=self.dob(age, today) if has_dob else None,
                nhs=(not has_dob) or rng.random() < 0.9,
                police=young_adult or rng.random() < police_p,
                address=home.address,
            )
            if young_adult:
                child["care_leaver"] = rng.random() < 0.4
            if responsible_la is not None:
                child["looked_after"] = True
                child["responsible_la"] = responsible_la
            subjects.append(child)
        children = list(subjects)
        school_age = [c for c, a in zip(children, ages, strict=True) if 4 <= a <= 16]
        school_age = [c for c in school_age if c["date_of_birth"] is not None]
        if school_age and rng.random() < P_HOME_EDUCATED / 0.8:
            rng.choice(school_age)["home_educated"] = True
        urns = list(self.schools.get(home.lscp, ()))
        for child in school_age:
            if urns and not child["home_educated"] and rng.random() < P_SCHOOL_URN:
                child["school_urn"] = rng.choice(urns)

        # Adults.
        oldest = ages[0]
        care_leaver = bool(children[0]["care_leaver"])
        carer_family = rng.choice(_FAMILY) if responsible_la or rng.random() < 0.25 else family
        carers: list[dict[str, Any]] = []
        if not care_leaver:
            for index in range(2 if rng.random() < 0.3 else 1):
                carer_age = min(oldest + rng.randint(17, 35), 64)
                carers.append(
                    self.subject(
                        f"S{len(subjects) + 1}",
                        SubjectRole.PARENT_CARER,
                        given=self.given_name(index == 0, adult=True),
                        family=carer_family,
                        dob=self.dob(carer_age, today) if rng.random() < 0.9 else None,
                        nhs=rng.random() < 0.4,
                        police=rng.random() < 0.6,
                        address=home.address,
                        phone=True,
                    )
                )
                subjects.append(carers[-1])
        perp: dict[str, Any] | None = None
        if care_leaver or rng.random() < _PERPETRATOR.get(ctype, 0.1):
            where = rng.random()
            if where < 0.4 and ctype is _T.DOMESTIC_ABUSE:
                perp_address: dict[str, Any] | None = home.address
            elif where < 0.8:
                perp_address = self.address(home.lscp, with_la_code=rng.random() >= 0.2)
            else:
                perp_address = None
            perp = self.subject(
                f"S{len(subjects) + 1}",
                SubjectRole.ALLEGED_PERPETRATOR,
                given=self.given_name(rng.random() < 0.2, adult=True),
                family=rng.choice(_FAMILY),
                dob=self.dob(rng.randint(19, 55), today) if rng.random() < 0.85 else None,
                nhs=rng.random() < 0.3,
                police=rng.random() < 0.95,
                address=perp_address,
                phone=True,
            )
            subjects.append(perp)
        extra = rng.random()
        if extra < 0.04:
            role, age_range = SubjectRole.SIBLING, (18, 26)
        elif extra < 0.08:
            role, age_range = SubjectRole.OTHER_ADULT, (25, 75)
        else:
            role = None
        if role is not None:
            subjects.append(
                self.subject(
                    f"S{len(subjects) + 1}",
                    role,
                    given=self.given_name(rng.random() < 0.5, adult=True),
                    family=family if role is SubjectRole.SIBLING else rng.choice(_FAMILY),
                    dob=self.dob(rng.randint(*age_range), today),
                    nhs=rng.random() < 0.3,
                    police=rng.random() < 0.3,
                    address=home.address if role is SubjectRole.SIBLING else None,
                )
            )

        # Where it happened.
        incident = self.incident(ctype, home, cross_border)

        # Officer, consent, text.
        officer = self.officer(home.lscp)
        recorded_by = officer.pop("recorded_by")
        consent_state = _weighted(rng, _CONSENT_WEIGHTS)
        if consent_state is ConsentState.NOT_SOUGHT:
            reason: str | None = _weighted(rng, _NOT_SOUGHT_REASONS)
        else:
            reason = _CONSENT_REASONS.get(consent_state)
            if reason and young_adult:
                reason = reason.replace("parent/carer", "young person")
        span = int((reported - occurred).total_seconds())
        recorded_at = occurred + timedelta(seconds=rng.randint(0, span))
        if consent_state is ConsentState.WITHDRAWN:
            recorded_at = reported

        def full(person: dict[str, Any] | None, fallback: str) -> str:
            if person is None:
                return fallback
            return f"{person['given_name']} {person['family_name']}"

        first = children[0]
        carer = carers[0] if carers else None
        words = {
            "child": first["given_name"],
            "age": str(ages[0]),
            "carer": full(carer, "a relative"),
            "victim": full(carer, first["given_name"]) if not young_adult else full(first, ""),
            "perp": full(perp, "their ex-partner"),
            "adult": full(perp, "an adult known to the family"),
            "town": incident["town"],
            "nth": rng.choice(_NTH),
            "hours": str(rng.randint(3, 20)),
            "dash": _DASH[grade],
        }
        openings, follow_ups = _NARRATIVES[ctype]
        sentences = [rng.choice(openings)]
        sentences += rng.sample(follow_ups, k=min(len(follow_ups), rng.randint(0, 2)))
        narrative = " ".join(_sentence(s.format(**words)) for s in sentences)

        voice = self.voice(ctype, ages, words)
        if voice is not None and voice["said"] and perp is not None:
            # Children name people: the words that once leaked a perpetrator's name
            # to a school (issue 11). Minimisation must cut it for such recipients.
            voice["said"] = f"{voice['said']} {perp['given_name']} was there."
        third_party: list[str] = []
        if rng.random() < P_THIRD_PARTY:
            adults = [s for s in subjects if s["role"] != SubjectRole.CHILD.value]
            carers_first = [s for s in adults if s["role"] == SubjectRole.PARENT_CARER.value]
            third_party = [rng.choice(carers_first or adults)["subject_ref"]]
        return {
            "concern_id": concern_id,
            "source_agency": SOURCE_AGENCY,
            "source_ref": f"44{reported.year % 100:02d}{rng.randrange(10_000_000):07d}",
            "reported_at": _iso(reported),
            "occurred_at": _iso(occurred),
            "concern_type": ctype.value,
            "risk_grade": grade.value,
            "subjects": subjects,
            "incident_location": incident["location"],
            "child_present": ctype is not _T.MISSING and rng.random() < 0.6,
            "voice_of_child": voice,
            "narrative": narrative,
            "immediate_actions": rng.choice(_ACTIONS[ctype]) if rng.random() < 0.8 else None,
            "consent": {
                "state": consent_state.value,
                "reason": reason,
                "recorded_by": recorded_by,
                "recorded_at": _iso(recorded_at),
            },
            "third_party_protection": third_party,
            "restricted": rng.random() < P_RESTRICTED,
            "officer": officer,
            "risk_assessments": _risk_assessments(
                concern_id, ctype, grade, children, recorded_by, _iso(reported)
            ),
        }

    def incident(self, ctype: ConcernType, home: _Home, cross_border: bool) -> dict[str, Any]:
        """``{"location": IncidentLocation dict or None, "town": for the narrative}``."""
        rng = self.rng
        town = str(home.address["town"])
        if cross_border:
            other = rng.choice([p for p in _LA_OF if p != home.lscp])
            place = rng.choice(_PLACES[other])
            location: dict[str, Any] = {
                "description": f"{rng.choice(_PUBLIC_PLACES)}, {place.town}",
                "postcode": self.postcode(place.district),
                "la_code": _LA_OF[other],
            }
            return {"location": location, "town": place.town}
        if ctype is _T.ONLINE_GROOMING and rng.random() < 0.6:
            online = {"description": "Online (social media messaging)"}
            return {"location": {**online, "postcode": None, "la_code": None}, "town": town}
        at_home = ctype in _FAMILY_TYPES or home.address["la_code"] is None
        if at_home or rng.random() < 0.5:
            if rng.random() < 0.1:
                return {"location": None, "town": town}
            location = {
                "description": "Home address",
                "postcode": home.address["postcode"],
                "la_code": home.address["la_code"],
            }
            return {"location": location, "town": town}
        place = rng.choice(_PLACES[home.lscp])
        location = {
            "description": f"{rng.choice(_PUBLIC_PLACES)}, {place.town}",
            "postcode": self.postcode(place.district),
            "la_code": _LA_OF[home.lscp] if rng.random() < 0.8 else None,
        }
        return {"location": location, "town": place.town}

    def officer(self, lscp: str) -> dict[str, Any]:
        rng = self.rng
        given, family = rng.choice(_OFFICER_GIVEN), rng.choice(_OFFICER_FAMILY)
        rank = _weighted(rng, _RANKS)
        collar = str(rng.randint(1000, 29999))
        phone = (
            f"07700 900{rng.randrange(1000):03d}"
            if rng.random() < 0.5
            else f"01632 960{rng.randrange(1000):03d}"
        )
        return {
            "recorded_by": f"{rank} {collar} {given} {family}",
            "name": f"{given} {family}",
            "collar_number": collar,
            "unit": rng.choice(_UNITS[lscp]),
            "email": f"{given.lower()}.{family.lower()}@police.example.uk",
            "phone": phone if rng.random() < 0.85 else None,
        }

    def voice(
        self, ctype: ConcernType, ages: Sequence[int], words: Mapping[str, str]
    ) -> dict[str, Any] | None:
        rng = self.rng
        if rng.random() < 0.1:
            return None  # child not seen
        if max(ages) < 2:
            return {"said": None, "observed": rng.choice(_OBSERVED_BABY)}
        seen = _OBSERVED if min(ages) < 12 else _OBSERVED_OLDER
        observed = rng.choice(seen).format(**words) if rng.random() < 0.5 else None
        return {"said": rng.choice(_SAID[ctype]), "observed": observed}


# ----------------------------------------------------------------------------- API


def synthetic_concerns(
    n: int,
    *,
    seed: int,
    now: datetime,
    directory_schools: Mapping[str, Sequence[str]] | None = None,
) -> list[dict[str, Any]]:
    """``n`` synthetic police concerns as police-JSON dicts; same arguments, same output.

    ``now`` must be timezone-aware; every ``reported_at`` falls within the two days
    before it. ``directory_schools`` maps partnership name to school URNs (default
    :data:`DIRECTORY_SCHOOLS`, the schools in deploy/directory.toml).
    """
    if n < 0:
        raise ValueError("n must not be negative")
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    schools = DIRECTORY_SCHOOLS if directory_schools is None else directory_schools
    rng = random.Random(seed)  # noqa: S311 (reproducible test data, not security)
    generator = _Generator(rng, now.astimezone(UTC), schools)
    return [generator.concern() for _ in range(n)]


def synthetic_people(concerns: Iterable[Mapping[str, Any]]) -> dict[str, set[str]]:
    """Every personal value of the concerns' subjects, for leak scans.

    Keys: ``names`` (given and family names, separately), ``dates_of_birth``
    (ISO), ``nhs_numbers``, ``postcodes`` (subjects' addresses and incident
    locations), ``police_person_ids`` and ``phones``, each as written in the concerns. The
    officer is not a subject and is not included.
    """
    people: dict[str, set[str]] = {
        "names": set(),
        "dates_of_birth": set(),
        "nhs_numbers": set(),
        "postcodes": set(),
        "police_person_ids": set(),
        "phones": set(),
    }

    def add(kind: str, value: object) -> None:
        if value is not None and str(value) != "":
            people[kind].add(str(value))

    for concern in concerns:
        for subject in concern.get("subjects") or ():
            add("names", subject.get("given_name"))
            add("names", subject.get("family_name"))
            add("dates_of_birth", subject.get("date_of_birth"))
            add("nhs_numbers", subject.get("nhs_number"))
            add("police_person_ids", subject.get("police_person_id"))
            add("phones", subject.get("phone"))
            address = subject.get("address") or {}
            add("postcodes", address.get("postcode"))
        location = concern.get("incident_location") or {}
        add("postcodes", location.get("postcode"))
    return people

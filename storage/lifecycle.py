"""The lifecycle safety net: an S3 lifecycle rule that expires ephemeral recordings' objects some
days after the retention, in case the sweeper (the scheduler inside `afterlive serve`) is down.

The rule matches objects under `recordings/` tagged `afterlive-retention=ephemeral`. With the
safety net on, every object of a recording is written with that tag; a hold re-tags its objects
`held` (and a release back), so the store never expires a held recording. Clips and programmes
live outside `recordings/` and carry no tag: the rule cannot reach them.

The sweeper stays the way things expire (on time, audited, with 410 answers); the rule only
catches what a stopped scheduler left behind, `margin` days later.
"""

from __future__ import annotations

import math
from datetime import timedelta

from storage import keys as K

RULE_ID = "afterlive-safety-net"
TAG_KEY = "afterlive-retention"
EPHEMERAL = "ephemeral"
HELD = "held"
DEFAULT_MARGIN_DAYS = 2


def tagged(key: str) -> bool:
    """Whether an object carries the retention tag: everything of a recording, nothing else."""
    return key.startswith(K.RECORDINGS)


def expiration_days(retention: timedelta, margin_days: int = DEFAULT_MARGIN_DAYS) -> int:
    """Whole days after an object's creation (S3 counts from then, not from the live's end)."""
    return max(1, math.ceil(retention / timedelta(days=1))) + margin_days


def safety_net_rule(days: int) -> dict:
    return {
        "ID": RULE_ID,
        "Status": "Enabled",
        "Filter": {"And": {"Prefix": K.RECORDINGS, "Tags": [{"Key": TAG_KEY, "Value": EPHEMERAL}]}},
        "Expiration": {"Days": days},
    }

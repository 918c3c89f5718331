"""Who may change what on a shared deployment: runs and made datasets record their owner.

Each browser holds a random owner token (the app keeps it in a cookie); a run started from
the app records a digest of it in ``<run>/owner.json``, a made dataset in its
``dataset.json`` (``owner``). The token itself is never written to disk.

Ownership is enforced only when the app is shared: an owner secret is configured
(``$TL_OWNER_SECRET``, or the app's ``owner_secret`` secret) or ``$TL_SHARED=1``. Then a
session may delete, stop or edit only what its token made; what has no owner record (made
with the command line, or before owners were recorded) only with the secret; and a session
that gave the right secret may change everything. Not enforced (a laptop), everything is
everyone's. Opening, classifying, comparing, exporting, checking and training on anything is
never restricted. Plain Python: no Streamlit.
"""

import hashlib
import hmac
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from tl.errors import UserError
from tl.files import atomic_write_json, read_json

RUN_RECORD = "owner.json"
SECRET_ENV = "TL_OWNER_SECRET"
SHARED_ENV = "TL_SHARED"
_DIGEST = re.compile(r"[0-9a-f]{64}")

log = logging.getLogger(__name__)


class NotYours(UserError):
    """A session tried to change a run or dataset it may not change."""


@dataclass(frozen=True)
class Policy:
    """The deployment's rule: ``secret`` (the owner secret, ``None`` when none is set) and
    ``shared`` (``$TL_SHARED=1``: owners enforced even without a secret)."""

    secret: str | None = None
    shared: bool = False

    @property
    def enforced(self) -> bool:
        return bool(self.secret) or self.shared

    @classmethod
    def from_env(cls, secret: str | None = None) -> "Policy":
        """The policy of this process: ``$TL_OWNER_SECRET`` (else ``secret``, e.g. the one
        in the app's secrets) and ``$TL_SHARED``."""
        return cls(secret=os.environ.get(SECRET_ENV) or secret or None,
                   shared=os.environ.get(SHARED_ENV, "").strip() == "1")


def digest(token: str | None) -> str | None:
    """The sha256 hex digest recorded for an owner token (``None`` for no token)."""
    return hashlib.sha256(token.encode()).hexdigest() if token else None


def secret_matches(typed: str | None, policy: Policy) -> bool:
    """Whether ``typed`` is the configured owner secret (compared in constant time)."""
    if not typed or not policy.secret:
        return False
    return hmac.compare_digest(typed.encode(), policy.secret.encode())


def may_change(owner: str | None, token: str | None, typed: str | None = None,
               policy: Policy = Policy()) -> bool:
    """Whether a session holding ``token`` (and having typed ``typed`` as the secret) may
    delete, stop or edit a thing whose recorded owner digest is ``owner``.

    Args:
        owner: the thing's recorded owner digest, ``None`` when it has none.
        token: the session's owner token.
        typed: what the session gave as the owner secret, if anything.
        policy: the deployment's rule (:meth:`Policy.from_env`).
    """
    if not policy.enforced or secret_matches(typed, policy):
        return True
    mine = digest(token)
    return bool(owner and mine) and hmac.compare_digest(owner, mine)


def refusal(owner: str | None, verb: str = "delete") -> str:
    """The one sentence said where a change is not allowed (``verb``: what is refused)."""
    if owner:
        return f"Made by another visitor: only they, or someone with the owner secret, can {verb} it."
    return (f"Made before owners were recorded (or with the command line): only someone with the owner secret "
            f"can {verb} it.")


def require(owner: str | None, token: str | None, typed: str | None = None, policy: Policy = Policy(),
            verb: str = "delete") -> None:
    """Raise :class:`NotYours` (with :func:`refusal`'s sentence) unless :func:`may_change`."""
    if not may_change(owner, token, typed, policy):
        raise NotYours(refusal(owner, verb))


# -- records -------------------------------------------------------------------------------

def valid(owner) -> str | None:
    """``owner`` when it is a digest as :func:`digest` writes it, else ``None`` (a damaged
    or edited record counts as no owner: only the secret may change the thing)."""
    return owner if isinstance(owner, str) and _DIGEST.fullmatch(owner) else None


def record_run(run_path, owner: str | None) -> None:
    """Write ``owner`` (a digest) into the run folder ``run_path``. A folder that cannot
    be written leaves the run without an owner (only the secret may change it), never
    failed."""
    if not valid(owner):
        return
    try:
        atomic_write_json(Path(run_path) / RUN_RECORD, {"owner": owner})
    except OSError as exc:
        log.warning("The owner of run %s could not be recorded: %s", Path(run_path).name, exc)


def run_owner(run_path) -> str | None:
    """The owner digest recorded in the run folder ``run_path``, or ``None``."""
    try:
        record = read_json(Path(run_path) / RUN_RECORD, {})
    except (OSError, ValueError):
        return None
    return valid(record.get("owner")) if isinstance(record, dict) else None


def dataset_owner(dataset) -> str | None:
    """The owner digest a made dataset (:class:`tl.data.made.MadeDataset`) records."""
    return valid(getattr(dataset, "owner", None))

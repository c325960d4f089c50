"""The v1 protocol in the web process: the public plan, and the checks a body passes before a worker sees it.

The plan comes from the workers' start-up reports, so the web process never loads SEAL objects
itself; it checks a body's size and header from its first bytes (`body_rule`, run by
`BoundedBodies`), and a public key's structure before storing it.
"""

from __future__ import annotations

import functools

from fastapi import Request

from bfv.plan import PublicPlan
from bfv.wire import (
    KEY_HEADER_SIZE,
    REQUEST_HEADER_SIZE,
    Kind,
    RequestHeader,
    WireError,
    check_public_key_header,
    check_request_header,
    public_key_size,
    request_size,
)
from service.errors import NotFound, Unprocessable
from service.http.bodies import BodyRule, body_head
from service.settings import Settings
from service.storage.accounts import StorageAccess
from service.workers.pool import WorkerPool

KEYS_PATH = "/v1/keys"
SINGLE_PATH, BATCH_PATH = "/v1/score", "/v1/score/batch"
# Scoring paths: metered in images (and batches allowed to BATCH_IDENTITIES only) by `Admission`.
SCORING_PATHS = frozenset({SINGLE_PATH, BATCH_PATH})


class V1Protocol:
    """What the routes need: the public plan (once workers are up) and body rules derived from it."""

    def __init__(self, pool: WorkerPool, settings: Settings) -> None:
        self._pool, self._settings = pool, settings
        self._plan: PublicPlan | None = None
        self._storage: StorageAccess | None = None
        self._body_rules: dict[str, BodyRule] | None = None

    @property
    def plan(self) -> PublicPlan:
        if self._plan is None:
            self._pool.require_ready()
            if self._pool.setup is None:
                raise NotFound("this model cannot be served by the v1 protocol; see the service log")
            self._plan = PublicPlan.from_description(self._pool.setup)
        return self._plan

    def body_rule(self, path: str) -> BodyRule | None:
        """The exact size a v1 body can have on `path` and the check of its header, for
        `BoundedBodies`; None for other paths."""
        if self._pool.setup is None:
            return None
        if self._body_rules is None:  # the plan never changes once known, so neither do the rules
            params = self.plan.params
            self._body_rules = {KEYS_PATH: BodyRule(public_key_size(params), KEY_HEADER_SIZE, self._check_key_head)}
            for path_, kind in ((SINGLE_PATH, Kind.SINGLE), (BATCH_PATH, Kind.BATCH)):
                ciphertexts, _ = self.plan.request_shape(kind)
                self._body_rules[path_] = BodyRule(request_size(ciphertexts, params), REQUEST_HEADER_SIZE,
                                                   functools.partial(self._check_request_head, kind))
        return self._body_rules.get(path)

    def _check_key_head(self, head: bytes, size: int) -> None:
        try:
            check_public_key_header(head, size, self.plan.params)
        except WireError as exc:
            raise Unprocessable(f"malformed public key: {exc}") from None

    def _check_request_head(self, kind: Kind, head: bytes, size: int) -> RequestHeader:
        ciphertexts, max_images = self.plan.request_shape(kind)
        try:
            return check_request_header(head, size, kind, ciphertexts, max_images, self.plan.params)
        except WireError as exc:
            raise Unprocessable(f"malformed request: {exc}") from None

    def request_header(self, kind: Kind, request: Request, body: bytes | memoryview) -> RequestHeader:
        """The header `BoundedBodies` checked as the body arrived (a request without a body is
        checked here, and refused)."""
        header = body_head(request)
        if header is None:
            header = self._check_request_head(kind, bytes(body[:REQUEST_HEADER_SIZE]), len(body))
        return header

    def storage(self) -> StorageAccess:
        if self._storage is None:
            self._storage = StorageAccess(self._settings)
        return self._storage

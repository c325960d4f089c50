"""The v1 protocol in the web process: the models it serves, their plans, and the checks a body passes
before a worker sees it.

Every model has the same routes under its own prefix, `/v1/models/{name}` (its latest version) and
`/v1/models/{name}/versions/{version}`; `/v1` is the default model's. The plans come from the
workers' start-up reports, so the web process never loads SEAL objects itself; it checks a body's
size and header from its first bytes (`body_rule`, run by `BoundedBodies`), and a public key's
structure before storing it.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import re
from dataclasses import dataclass, field

from fastapi import Request

from bfv.network_rounds import TOKEN_BYTES, round_blocks, round_plans, round_request_size
from bfv.network_plan import NetworkPublicPlan
from bfv.params import RingParameters
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
from model.catalog import version_order
from service.errors import Conflict, NotFound, Unprocessable
from service.http.bodies import BodyRule, body_head
from service.settings import Settings
from service.storage.accounts import StorageAccess
from service.workers.pool import WorkerPool

# /v1[/<route>], /v1/models/<name>[/<route>], /v1/models/<name>/versions/<version>[/<route>] (any segment:
# a path of a model that is not served still classifies as scoring, so Admission checks it).
_PATH = re.compile(r"/v1(?:/models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?)?(?:/(?P<route>.+))?")
SCORING_ROUTES = {"score": Kind.SINGLE, "score/batch": Kind.BATCH}
KEYS_ROUTE = "keys"
# A square network's rounds: one sample each, like `score`, or a batch of them, like `score/batch`
# (docs/protocol.md, square networks).
ROUND_ROUTE = re.compile(r"score(?P<batch>/batch)?/rounds/(?P<round>[0-9])")
ROUND_ROUTE_TEMPLATES = {Kind.SINGLE: "score/rounds/{round}", Kind.BATCH: "score/batch/rounds/{round}"}


@dataclass(frozen=True)
class RoundRoute:
    index: int
    kind: Kind

    @property
    def route(self) -> str:
        return ROUND_ROUTE_TEMPLATES[self.kind].format(round=self.index)


def round_of(route: str) -> RoundRoute | None:
    """The round and layout a `score/rounds/<n>` or `score/batch/rounds/<n>` route names, None for others."""
    match = ROUND_ROUTE.fullmatch(route)
    return None if match is None else RoundRoute(int(match["round"]), Kind.BATCH if match["batch"] else Kind.SINGLE)


@dataclass(frozen=True)
class V1Path:
    """A path below /v1, split: the model it names (None: the default model) and the route below
    it ("" for the model itself, "keys", "score/batch", ...), whether or not such a route exists."""

    name: str | None
    version: str | None
    route: str


def parse_v1_path(path: str) -> V1Path | None:
    """The parts of a /v1 path; None for any other path. The one parser of v1 paths: the protocol's
    body rules and admission, and the metrics' route labels."""
    match = _PATH.fullmatch(path)
    return None if match is None else V1Path(match["name"], match["version"], match["route"] or "")


@dataclass
class ServedModel:
    """One model as the web process knows it: what `/v1/models` lists, and its plan when v1 serves it."""

    key: str  # name/version
    listing: dict
    description: dict | None  # the model's /v1/model body; None when the v1 protocol cannot serve it
    unavailable: str | None
    _plan: PublicPlan | NetworkPublicPlan | None = None
    _rules: dict[str, BodyRule] = field(default_factory=dict)

    @property
    def is_network(self) -> bool:
        return self.description is not None and self.description.get("model_kind") == "square-network"

    def _any_plan(self) -> PublicPlan | NetworkPublicPlan:
        if self.description is None:
            raise Conflict(self.unavailable or f"the v1 protocol cannot serve model {self.key}")
        if self._plan is None:
            self._plan = (NetworkPublicPlan if self.is_network else PublicPlan).from_description(self.description)
        return self._plan

    @property
    def plan(self) -> PublicPlan:
        """A linear model's plan (409 for a network, which is scored in rounds)."""
        plan = self._any_plan()
        if isinstance(plan, NetworkPublicPlan):
            raise Conflict(f"model {self.key} is a square network: it is scored in rounds, POST its "
                           f"{ROUND_ROUTE_TEMPLATES[Kind.SINGLE]} (or {ROUND_ROUTE_TEMPLATES[Kind.BATCH]}) routes from "
                           "round 0 (docs/protocol.md), not score or score/batch")
        return plan

    @property
    def network_plan(self) -> NetworkPublicPlan:
        """A square network's plan (409 for a linear model)."""
        plan = self._any_plan()
        if not isinstance(plan, NetworkPublicPlan):
            raise Conflict(f"model {self.key} is a linear model: score it with POST score or score/batch, not in "
                           "rounds")
        return plan

    @property
    def ring(self) -> RingParameters:
        """The parameters its public keys are made for."""
        return self._any_plan().params

    def rounds(self) -> int:
        return len(self.network_plan.rounds) if self.is_network else 0

    def body_rule(self, route: str) -> BodyRule | None:
        """The exact size a body of `route` has and the check of its header; None for other routes."""
        if self.description is None:
            return None
        if not self._rules:  # the plan never changes once known, so neither do the rules
            params = self.ring
            self._rules[KEYS_ROUTE] = BodyRule(public_key_size(params), KEY_HEADER_SIZE, self._check_key_head)
            if self.is_network:
                layouts = [Kind.SINGLE] + ([Kind.BATCH] if self.network_plan.batch is not None else [])
                for index, kind in itertools.product(range(self.rounds()), layouts):
                    round_route = RoundRoute(index, kind)
                    blocks = self.network_plan.batch_blocks if kind is Kind.BATCH else 1
                    self._rules[round_route.route] = BodyRule(
                        round_request_size(self.network_plan, index, kind is Kind.BATCH, blocks), REQUEST_HEADER_SIZE,
                        functools.partial(self.check_round_head, round_route))
                return self._rules.get(route)
            for name, kind in SCORING_ROUTES.items():
                ciphertexts, _ = self.plan.request_shape(kind)
                self._rules[name] = BodyRule(request_size(ciphertexts, params), REQUEST_HEADER_SIZE,
                                             functools.partial(self.check_request_head, kind))
        return self._rules.get(route)

    def check_round_head(self, round_route: RoundRoute, head: bytes, size: int) -> RequestHeader:
        """A round's size, and the header of its first request (each request of a round names the same key)."""
        plan, round_index, batch = self.network_plan, round_route.index, round_route.kind is Kind.BATCH
        if not 0 <= round_index < len(plan.rounds):
            raise NotFound(f"model {self.key} is scored in {len(plan.rounds)} rounds, 0 to {len(plan.rounds) - 1}")
        if batch and plan.batch is None:
            raise Conflict(f"model {self.key}: {plan.batch_refusal}; score it one sample per request")
        try:
            round_blocks(plan, round_index, size, batch)
        except WireError as exc:
            raise Unprocessable(f"malformed request: {exc}") from None
        first = round_plans(plan, round_index, batch)[0]
        ciphertexts, most = first.request_shape(round_route.kind)
        try:
            return check_request_header(head, request_size(ciphertexts, first.params), round_route.kind, ciphertexts,
                                        most, first.params)
        except WireError as exc:
            raise Unprocessable(f"malformed request: {exc}") from None

    def _check_key_head(self, head: bytes, size: int) -> None:
        try:
            check_public_key_header(head, size, self.ring)
        except WireError as exc:
            raise Unprocessable(f"malformed public key: {exc}") from None

    def check_request_head(self, kind: Kind, head: bytes, size: int) -> RequestHeader:
        ciphertexts, max_images = self.plan.request_shape(kind)
        try:
            return check_request_header(head, size, kind, ciphertexts, max_images, self.plan.params)
        except WireError as exc:
            raise Unprocessable(f"malformed request: {exc}") from None


class V1Protocol:
    """What the routes need: the served models (once workers are up), and body rules from their plans."""

    def __init__(self, pool: WorkerPool, settings: Settings) -> None:
        self._pool, self._settings = pool, settings
        self._models: dict[str, ServedModel] | None = None
        self._storage: StorageAccess | None = None

    def _served(self) -> dict[str, ServedModel] | None:
        if self._models is None and self._pool.setup is not None:
            self._models = {}
            for key, report in self._pool.setup["models"].items():
                listing = {field: value for field, value in report.items() if field not in ("v1", "v1_unavailable")}
                self._models[key] = ServedModel(key, listing, report["v1"], report.get("v1_unavailable"))
        return self._models

    def models(self) -> dict[str, ServedModel]:
        """Every served model by key (503 while the workers start)."""
        self._pool.require_ready()
        served = self._served()
        assert served is not None  # ready implies set up
        return served

    def model(self, name: str | None = None, version: str | None = None) -> ServedModel:
        """The default model (no name), a name's latest version, or one version; 404 for others."""
        models = self.models()
        if name is None:
            return models[self._pool.setup["default"]]
        if version is not None:
            found = models.get(f"{name}/{version}")
        else:  # the latest version of the name
            versions = [model for model in models.values() if model.listing["name"] == name]
            found = max(versions, key=lambda model: version_order(model.listing["version"]), default=None)
        if found is None:
            raise NotFound(f"no model {name}" + (f" version {version}" if version else "") + " is served here; "
                           "GET /v1/models lists them")
        return found

    def model_of(self, request: Request) -> ServedModel:
        return self.model(request.path_params.get("name"), request.path_params.get("version"))

    def default_key(self) -> str:
        self._pool.require_ready()
        return self._pool.setup["default"]

    def _resolve(self, path: str) -> tuple[ServedModel, str] | None:
        """(model, route) of a v1 path, without raising: None for other paths and unknown models."""
        parsed = parse_v1_path(path)
        served = self._served()
        if parsed is None or served is None:
            return None
        try:
            return self.model(parsed.name, parsed.version), parsed.route
        except (NotFound, Conflict):
            return None

    def default_model(self) -> ServedModel | None:
        """The default model, without raising: None while the workers start."""
        served = self._served()
        return None if served is None else served[self._pool.setup["default"]]

    def body_rule(self, path: str) -> BodyRule | None:
        """For `BoundedBodies`: the rule of a v1 body on `path`, None for other paths."""
        resolved = self._resolve(path)
        return None if resolved is None else resolved[0].body_rule(resolved[1])

    def scoring_kind(self, path: str) -> Kind | None:
        """For `Admission`: the kind of a scoring path (`.../score`, `.../score/batch`), None for others."""
        parsed = parse_v1_path(path)
        if parsed is None:
            return None
        round_route = round_of(parsed.route)
        return round_route.kind if round_route is not None else SCORING_ROUTES.get(parsed.route)

    def round_header(self, model: ServedModel, round_route: RoundRoute, request: Request, body: bytes | memoryview
                     ) -> RequestHeader:
        """The first request header of a round, as `BoundedBodies` checked it (or checked here), with the
        samples of all its blocks (a batch round of several blocks of N: the others' first headers read here)."""
        header = body_head(request)
        if header is None:
            header = model.check_round_head(round_route, bytes(body[:REQUEST_HEADER_SIZE]), len(body))
        if round_route.kind is not Kind.BATCH:
            return header
        plan = model.network_plan
        blocks = round_blocks(plan, round_route.index, len(body), True)
        if blocks == 1:
            return header
        step = round_request_size(plan, round_route.index, True) - (TOKEN_BYTES if round_route.index else 0)
        samples = header.images
        for block in range(1, blocks):
            if samples != block * plan.degree:
                raise Unprocessable(f"malformed request: every block of a batch but the last holds {plan.degree} "
                                    "samples")
            head = bytes(body[block * step : block * step + REQUEST_HEADER_SIZE])
            samples += model.check_round_head(round_route, head, len(body)).images
        return dataclasses.replace(header, images=samples)

    def request_header(self, model: ServedModel, kind: Kind, request: Request, body: bytes | memoryview
                       ) -> RequestHeader:
        """The header `BoundedBodies` checked as the body arrived (a request without a body is
        checked here, and refused)."""
        header = body_head(request)
        if header is None:
            header = model.check_request_head(kind, bytes(body[:REQUEST_HEADER_SIZE]), len(body))
        return header

    def storage(self) -> StorageAccess:
        if self._storage is None:
            self._storage = StorageAccess(self._settings)
        return self._storage

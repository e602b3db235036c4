"""botocore sessions and clients: one shared client per (service, region).

cloudsh makes clients with botocore itself: boto3 adds resources and S3 transfers,
which cloudsh does not use, and ~30 ms of imports (s3transfer) to every start. Clients
are thread-safe for calls; sessions are not, so the one session is only touched under
a lock, when a client is first made. Building a client costs ~150 ms
(it loads and parses the service model), so a client per worker thread would pay that
again in every thread: `cloudsh ls` went from 0.2 s to 0.05 s of API time by sharing.
The sandbox and real AWS differ here only by `endpoint_url` and credentials.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import pickle
import sys
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import botocore
import botocore.client
import botocore.config
import botocore.exceptions
import botocore.loaders
import botocore.parsers
import botocore.session
import botocore.utils

from cloudsh.errors import CredentialsError

#: botocore's "standard" retry mode retries throttling and 5xx with backoff.
_RETRIES: dict[str, Any] = {"mode": "standard", "max_attempts": 5}
#: ... and none for a client whose caller retries itself (`ClientFactory.client(once=True)`).
_ONCE = botocore.config.Config(retries={"mode": "standard", "total_max_attempts": 1})

#: Server errors (HTTP 500) that another try in the same place does not cure: EC2 sends
#: `InsufficientInstanceCapacity` as a server error ("Error codes for the Amazon EC2 API",
#: https://docs.aws.amazon.com/AWSEC2/latest/APIReference/errors-overview.html), and
#: botocore would retry it four times with backoff (seconds) before the caller may try
#: another Availability Zone.
_NOT_RETRIED = frozenset({"InsufficientInstanceCapacity", "InsufficientCapacity"})


def _no_retry_for_capacity(response: Any = None, operation: Any = None, **_: Any) -> None:
    """`needs-retry` hook: a capacity error goes to the caller at once."""
    if response is None:
        return
    parsed = response[1]
    if parsed.get("Error", {}).get("Code") in _NOT_RETRIED:
        raise botocore.exceptions.ClientError(parsed, operation.name)


@dataclass(frozen=True)
class AwsTarget:
    """Which cloud to talk to: real AWS (profile/region) or an endpoint such as the sandbox."""

    region: str
    profile: str | None = None
    endpoint_url: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None
    sandbox: bool = False


class DictJSONFileLoader(botocore.loaders.JSONFileLoader):  # type: ignore[misc]
    """botocore's JSON file loader, building plain dicts instead of `OrderedDict`s.

    Dicts keep their order, and nothing in botocore needs more. The difference is what
    a first start pays for EC2's 4 MB model: parsed into OrderedDicts it took 140 ms and
    pickling them for the cache another 130 ms (each OrderedDict is pickled through
    Python-level `copyreg`); as dicts, ~80 ms and ~20 ms. Unpickling is quicker too.
    """

    def _load_file(self, full_path: str, open_method: Any) -> Any:
        if not os.path.isfile(full_path):
            return None
        with open_method(full_path, "rb") as fp:
            return json.loads(fp.read().decode("utf-8"))


#: Models parsed when cloudsh was installed (`make`, `python -m cloudsh.services.models`),
#: as its bytecode is: read when the user's cache has none yet (a first start).
PREPARED_MODELS = Path(sys.prefix) / "share" / "cloudsh" / "botocore-models"
#: The services whose models are prepared: EC2's 4 MB model is parsed by every command.
PREPARED_SERVICES = ("ec2",)


def prepare_models(dest: Path = PREPARED_MODELS) -> list[Path]:
    """Parse and pickle the `PREPARED_SERVICES` models into `dest` (kept if already there)."""
    loader = botocore.loaders.Loader()
    loader.FILE_LOADER_CLASS = DictJSONFileLoader
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for service in PREPARED_SERVICES:
        path = dest / f"{botocore.__version__}-{service}-latest.pickle"
        if not path.exists():
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_bytes(pickle.dumps(loader.load_service_model(service, "service-2"), protocol=pickle.HIGHEST_PROTOCOL))
            tmp.replace(path)
            written.append(path)
    return written


class CachingLoader(botocore.loaders.Loader):  # type: ignore[misc]
    """botocore's data loader, with parsed service models kept as pickles in cloudsh's cache.

    Every process parses EC2's 4 MB JSON model before its first call: ~80 ms (as dicts,
    see `DictJSONFileLoader`) of the ~0.7 s `cloudsh ls` spends on this side of the
    network. Unpickling is quicker. The cache is keyed by botocore's version, so an
    upgrade never reads a stale model, and it lives in the user's own cache dir (the same
    trust as the .pyc files Python loads); a first start reads the models prepared at
    install beside the virtualenv (`PREPARED_MODELS`), if any, as it reads the bytecode.
    """

    FILE_LOADER_CLASS = DictJSONFileLoader

    def __init__(self, cache_dir: Path, prepared: Path = PREPARED_MODELS) -> None:
        super().__init__()
        self._dir = cache_dir / "botocore-models"
        self._prepared = prepared
        self._writers: list[threading.Thread] = []
        self._loading = threading.RLock()

    @botocore.loaders.instance_cache  # type: ignore[untyped-decorator]  # one load a process, as botocore does
    def load_service_model(self, service_name: str, type_name: str, api_version: str | None = None) -> Any:
        # One load at a time: clients' first calls in many threads at once (a sweep of
        # every region) each missed the cache and each listed botocore's ~400 data
        # directories for the paginator model: seconds of CPU. Waiting here, the others
        # find the first one's answer in the cache (botocore's own methods share it).
        with self._loading:
            return self._load_service_model(service_name, type_name, api_version)

    def _load_service_model(self, service_name: str, type_name: str, api_version: str | None) -> Any:
        if type_name != "service-2":
            return super().load_service_model(service_name, type_name, api_version)
        name = f"{botocore.__version__}-{service_name}-{api_version or 'latest'}.pickle"
        path = self._dir / name
        for where in (path, self._prepared / name):
            try:
                return pickle.loads(where.read_bytes())
            except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ValueError):
                pass  # not cached yet (or unreadable): parse the JSON and cache it
        model = super().load_service_model(service_name, type_name, api_version)
        # Written by a thread: on a first start the pickling (~25 ms) then overlaps the
        # first request's wait for the network instead of delaying the request. Not a
        # daemon: a script that never closes its backend still exits with the cache written.
        writer = threading.Thread(target=self._save, args=(path, model), name="model-cache")
        self._writers.append(writer)
        writer.start()
        return model

    def _save(self, path: Path, model: Any) -> None:
        tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            self._dir.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL))
            tmp.replace(path)
        except Exception:  # noqa: BLE001 - the cache only saves time; the next start parses again
            with contextlib.suppress(OSError):
                tmp.unlink()

    def flush(self) -> None:
        """Wait until the models parsed so far are in the cache."""
        while self._writers:
            self._writers.pop().join()


#: The sessions whose clients of one service share their model and class
#: (`_one_model_per_service`), by their event emitter, with what was built so far.
_SHARED: weakref.WeakKeyDictionary[Any, dict[tuple[str, str, str | None], Any]] = weakref.WeakKeyDictionary()


def _one_model_per_service(session: botocore.session.Session) -> None:
    """Let `session`'s clients of one service share one service model and one class.

    botocore builds both anew for every client: the class gets a method and a docstring
    object for each operation (about 750 for EC2, ~18 ms), and the model resolves each
    operation and shape again at the client's first calls. A sweep of every region
    (`orphans --all-regions`) did that 17 times over. Both depend only on the service's
    model data and the session's `creating-client-class` handlers (cloudsh registers
    none), and botocore only reads them (the model caches its look-ups in place), so
    the session's first client of a service builds them and the others reuse them.
    Sessions not made here (say, boto3's in the IPython prompt) are left as botocore has
    them.
    """
    creator = botocore.client.ClientCreator
    if not all(hasattr(creator, name) for name in ("_load_service_model", "_create_client_class")):
        return  # a botocore that builds clients otherwise: each builds its own, as before
    _SHARED.setdefault(session.get_component("event_emitter"), {})
    if "_cloudsh_shares" in creator.__dict__:
        return
    creator._cloudsh_shares = True

    def shared(name: str, build: Any) -> Any:
        def share(self: Any, service_name: str, arg: Any = None) -> Any:
            made = _SHARED.get(self._event_emitter)
            if made is None:
                return build(self, service_name, arg)
            key = (name, service_name, arg.api_version if name == "class" else arg)
            if key not in made:
                made[key] = build(self, service_name, arg)
            return made[key]

        return share

    creator._load_service_model = shared("model", creator._load_service_model)
    creator._create_client_class = shared("class", creator._create_client_class)


class SlicedXMLParsing:
    """botocore hands a whole XML response to expat in one call, which holds the GIL until
    the document is parsed: 60-80 ms for DescribeInstances with 1,000 instances, during
    which the app's event loop could not run (a worker thread was listing). Fed in
    slices, the parser lets other threads in between two slices."""

    SLICE = 64 * 1024
    DEFAULT_ENCODING: str

    def _parse_xml_string_to_dom(self, xml_string: bytes) -> Any:
        if len(xml_string) <= self.SLICE:
            return super()._parse_xml_string_to_dom(xml_string)  # type: ignore[misc]
        try:
            parser = ElementTree.XMLParser(target=ElementTree.TreeBuilder(), encoding=self.DEFAULT_ENCODING)
            for start in range(0, len(xml_string), self.SLICE):
                parser.feed(xml_string[start : start + self.SLICE])
            return parser.close()
        except ElementTree.ParseError as exc:
            raise botocore.parsers.ResponseParserError(
                f"Unable to parse response ({exc}), invalid XML received. Further retries may succeed"
            ) from None


#: The members of EC2's `Instance` that cloudsh reads (`services/ec2.py` `_instance`, the
#: one place an instance's raw answer becomes a record); tests/test_aws_clients.py holds
#: the two together.
INSTANCE_MEMBERS = frozenset({
    "InstanceId", "Tags", "InstanceType", "State", "InstanceLifecycle", "Placement",
    "PublicIpAddress", "PrivateIpAddress", "LaunchTime", "ImageId", "KeyName", "Architecture",
    "SpotInstanceRequestId", "SecurityGroups", "BlockDeviceMappings", "RootDeviceName",
    "StateReason", "StateTransitionReason",
})


class _SomeMembers:
    """A structure shape seen through only some of its members."""

    def __init__(self, shape: Any, names: frozenset[str]) -> None:
        self._shape = shape
        self.members = {k: v for k, v in shape.members.items() if k in names}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._shape, name)


class SlicedEC2QueryParser(SlicedXMLParsing, botocore.parsers.EC2QueryParser):  # type: ignore[misc]
    """EC2's parser, reading of each instance only the members cloudsh uses.

    An instance in EC2's answer carries some sixty members, network interfaces, IPv6,
    CPU options and product codes among them, and botocore parses every one into dicts.
    cloudsh reads eighteen (`INSTANCE_MEMBERS`); the others are skipped, which takes
    DescribeInstances of 300 boxes from ~155 to ~90 ms of parsing."""

    ONLY: dict[str, frozenset[str]] = {"Instance": INSTANCE_MEMBERS}
    _seen: dict[int, _SomeMembers] = {}

    def _handle_structure(self, shape: Any, node: Any) -> Any:
        names = self.ONLY.get(shape.name)
        if names is not None:
            narrowed = self._seen.get(id(shape))
            if narrowed is None or narrowed._shape is not shape:
                narrowed = self._seen[id(shape)] = _SomeMembers(shape, names)
            shape = narrowed
        return super()._handle_structure(shape, node)


class ParserFactory(botocore.parsers.ResponseParserFactory):  # type: ignore[misc]
    """botocore's response parsers, with EC2's (the big XML answers) parsing in slices."""

    SLICED: dict[str, type] = {"ec2": SlicedEC2QueryParser}

    def create_parser(self, protocol_name: str) -> Any:
        sliced = self.SLICED.get(protocol_name)
        return sliced(**self._defaults) if sliced else super().create_parser(protocol_name)


class ClientFactory:
    """Hands out botocore clients, one per (service, region), shared by all threads."""

    def __init__(
        self,
        target: AwsTarget,
        *,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        cache_dir: Path | None = None,
        prepared_models: Path = PREPARED_MODELS,
    ):
        self.target = target
        self.cache_dir = cache_dir
        self.prepared_models = prepared_models
        self._client_lock = threading.Lock()
        self._session: botocore.session.Session | None = None
        self._clients: dict[tuple[str, str, bool], Any] = {}
        self._aliases: dict[str, str] = {}
        self._config = botocore.config.Config(
            retries=_RETRIES,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            max_pool_connections=20,
            user_agent_extra="cloudsh",
        )
        self._hooks: list[tuple[str, Any]] = []
        self._loader: CachingLoader | None = None

    def register(self, event: str, handler: Any) -> None:
        """Register a botocore event handler on every client made from now on (tests, tracing)."""
        with self._client_lock:
            self._hooks.append((event, handler))
            self._clients.clear()

    def close(self) -> None:
        """Finish what was left to do in the background (caching the service models);
        the process may exit after this without losing it."""
        with self._client_lock:
            loader = self._loader
        if loader is not None:
            loader.flush()

    def session(self) -> botocore.session.Session:
        with self._client_lock:
            return self._session_locked()

    def _session_locked(self) -> botocore.session.Session:
        if self._session is None:
            t = self.target
            session = botocore.session.Session()
            session.register_component("response_parser_factory", ParserFactory())
            _one_model_per_service(session)
            if self.cache_dir is not None:
                self._loader = CachingLoader(self.cache_dir, self.prepared_models)
                session.register_component("data_loader", self._loader)
            if t.profile is not None:
                session.set_config_variable("profile", t.profile)
                share_role_cache(session, t.profile)
            if t.access_key_id or t.secret_access_key:
                session.set_credentials(t.access_key_id, t.secret_access_key)
            session.set_config_variable("region", t.region)
            self._session = session
        return self._session

    def client(self, service: str, region: str | None = None, *, once: bool = False) -> Any:
        """`once`: a client that makes each call once, for calls that must not be repeated
        blindly (a create without an idempotency token): its caller retries them."""
        key = (service, region or self.target.region, once)
        client = self._clients.get(key)
        if client is not None:
            return client
        with self._client_lock:
            client = self._clients.get(key)
            if client is None:
                client = self._session_locked().create_client(
                    service, region_name=key[1], endpoint_url=self.target.endpoint_url,
                    config=self._config.merge(_ONCE) if once else self._config,
                )
                events = client.meta.events
                if isinstance(getattr(events, "_alias_name_cache", None), dict):
                    # Each client's event system works out the alias of every event name
                    # it emits, once; the aliases are botocore's fixed table, the same for
                    # every client of the session, so they share what was worked out
                    # (a new region's client made its first calls ~30 % dearer).
                    events._alias_name_cache = self._aliases
                if service == "ec2":
                    events.register_first("needs-retry.ec2", _no_retry_for_capacity)
                for event, handler in self._hooks:
                    client.meta.events.register(event, handler)
                self._clients[key] = client
        return client


def profile_region(profile: str | None) -> str | None:
    """The profile's configured region; a profile that does not exist is an error here,
    before any client is made (botocore would only raise it from deep inside a call).

    Raises:
        CredentialsError: there is no profile named `profile`.
    """
    session = botocore.session.Session()
    if profile is not None:
        if profile not in session.available_profiles:
            raise CredentialsError(
                f"no AWS profile named {profile!r}",
                "list yours with `aws configure list-profiles`",
            )
        session.set_config_variable("profile", profile)
    try:
        return session.get_config_variable("region")  # type: ignore[no-any-return]
    except Exception:  # noqa: BLE001 - a broken config file: the default region, and boto3 says the rest
        return None


#: Where the AWS CLI keeps assumed-role credentials: sharing it, an MFA code typed for
#: `aws ... --profile P` (or once by cloudsh) serves every cloudsh process until it expires.
CLI_CACHE = Path("~/.aws/cli/cache")


def share_role_cache(session: botocore.session.Session, profile: str) -> None:
    """Assume-role credentials for `session` cached where the AWS CLI caches them, and an
    MFA code asked for on the terminal only: with no terminal to ask on, botocore's
    getpass would read stdin (or die on EOF) instead of saying what to do."""

    def ask(prompt: str) -> str:
        if not (sys.stdin.isatty() and sys.stderr.isatty()):
            raise CredentialsError(
                f"profile {profile!r} needs an MFA code and there is no terminal to ask for it",
                f"run `aws sts get-caller-identity --profile {profile}` first, then cloudsh again",
            )
        return getpass.getpass(prompt)

    provider = session.get_component("credential_provider").get_provider("assume-role")
    provider.cache = botocore.utils.JSONFileCache(str(CLI_CACHE.expanduser()))
    provider._prompter = ask  # botocore's own hook for the MFA prompt (getpass by default)


def unlock(profile: str) -> None:
    """Resolve `profile`'s credentials now, asking for its MFA code on this terminal, so
    that a full-screen front end never has a prompt land under it (the code is cached).

    Raises:
        CredentialsError: no terminal to ask on, or the role could not be assumed.
    """
    session = botocore.session.Session(profile=profile)
    share_role_cache(session, profile)
    try:
        credentials = session.get_credentials()
        if credentials is not None:
            credentials.get_frozen_credentials()
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        raise CredentialsError(
            f"could not assume the role of profile {profile!r}: {exc}",
            f"check it with `aws sts get-caller-identity --profile {profile}`",
        ) from None


def known_regions() -> frozenset[str]:
    """Every region name in botocore's partition data (all partitions: aws, aws-cn,
    aws-us-gov, ...), read from botocore's own files: no network."""
    session = botocore.session.Session()
    names = {r for p in session.get_available_partitions() for r in session.get_available_regions("ec2", p)}
    # A region newer than the EC2 endpoint list is still named in the partitions file.
    with contextlib.suppress(Exception):  # an older botocore has no partitions file
        partitions = session.get_component("data_loader").load_data("partitions")
        names.update(r for p in partitions["partitions"] for r in p.get("regions", {}))
    return frozenset(names)


ClientError = botocore.exceptions.ClientError
BotoCoreError = botocore.exceptions.BotoCoreError

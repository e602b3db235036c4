"""Random and mutated command lines through the one registry, as the CLI (words), the
REPL and the app's command line (typed lines, shell quoting) run them: never a traceback,
an exit status of 0, 1 or 2, a failure said in exactly one line, and nothing created in
the cloud.

Names of a box that exists are drawn only for commands that cannot change anything
without `--yes` (which is never drawn, and no terminal is there to ask on); the commands
that create things when their input happens to be valid (`launch`, `volume create`,
`sandbox up`/`down`, `ssh-config`) always get an unknown option too, so they are fuzzed
up to their argument checks.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloudsh.commands import REGISTRY, Context
from cloudsh.config import Settings
from cloudsh.errors import UsageError
from cloudsh.frontend import StdOutput, fail
from cloudsh.root import connect
from tests.cli import ok
from tests.sandbox_fixture import Sandbox

pytestmark = pytest.mark.sandbox

#: Change nothing without `--yes`, or change nothing at all.
GUARDED = {"ls", "show", "prices", "images", "jobs", "snapshots", "volumes", "terminate", "resize", "image delete",
           "snapshot delete", "volume delete", "job stop", "sandbox status", "sandbox env", "tunnels"}
#: Create something when their input is valid: always given an unknown option as well.
CREATING = {"launch", "idle", "volume create", "sandbox up", "sandbox down", "ssh-config", "budget", "tunnel",
            "tunnel close"}
NEVER = {"--yes", "-y", "--force", "--discard-results"}
POISON = "--no-such-option"

VERBS = sorted(REGISTRY.commands)
GHOSTS = ["ghost", "i-0123456789abcdef0", "vol-0123456789abcdef0", "snap-0123456789abcdef0",
          "ami-0123456789abcdef0", "nosuchjob-1", "g5.nope", "t3.medium", "g5.xlarge"]
ODD = ["", "-", "--", "--=", "-L", "8888", "0", "-1", "99999999999999999999", "'", '"', "\\", "a b",
       "$(reboot)", "`id`", ";rm -rf ~", "..", "/", "~", "%s%n", "\x00", "\u202e", "ï¬", "🚀" * 30, "x" * 3000]


def options_of(verb: str) -> list[str]:
    return [n for a in REGISTRY.commands[verb].args for n in a.names if n.startswith("-") and n not in NEVER]


@st.composite
def command_lines(draw: Any, existing: str) -> list[str]:
    verb = draw(st.sampled_from(VERBS))
    names = [*GHOSTS, existing] if verb in GUARDED else GHOSTS
    token = st.one_of(
        st.sampled_from(options_of(verb) or ["--json"]),
        st.sampled_from(names),
        st.sampled_from(ODD),
        st.text(max_size=30),
        st.integers(-(10**12), 10**12).map(str),
        st.sampled_from(VERBS),
    )
    words = verb.split() + draw(st.lists(token, max_size=8))
    words = [w for w in words if w not in NEVER and "\x00" not in w]
    return words + [POISON] if verb in CREATING else words


def inventory(sb: Sandbox) -> dict[str, Any]:
    ec2 = sb.ec2()
    return {
        "instances": sorted((i["InstanceId"], i["State"]["Name"], i["InstanceType"])
                            for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]),
        "volumes": sorted(v["VolumeId"] for v in ec2.describe_volumes()["Volumes"]),
        "snapshots": sorted(s["SnapshotId"] for s in ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]),
        "images": sorted(i["ImageId"] for i in ec2.describe_images(Owners=["self"])["Images"]),
        "groups": sorted(g["GroupId"] for g in ec2.describe_security_groups()["SecurityGroups"]),
        "keys": sorted(k["KeyName"] for k in ec2.describe_key_pairs()["KeyPairs"]),
    }


class Runner:
    """One backend and one event loop for every example, as in the REPL and the app."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.backend = connect(Settings.load(), sandbox=True)

    def run(self, words: list[str] | None, line: str | None = None) -> tuple[int, str]:
        err = io.StringIO()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            status = self.loop.run_until_complete(self._run(words, line))
        return status, err.getvalue()

    async def _run(self, words: list[str] | None, line: str | None) -> int:
        ctx = Context(out=StdOutput(), backend_factory=lambda: self.backend, confirm=None, terminal=None)
        try:
            prepared = REGISTRY.prepare(words) if words is not None else REGISTRY.prepare_line(line or "")
            if prepared is None:
                return 0
            return await prepared.run(ctx)
        except BaseException as exc:  # noqa: BLE001 - as the front ends do
            if isinstance(exc, KeyboardInterrupt | SystemExit):
                raise
            return fail(exc)

    def close(self) -> None:
        self.loop.run_until_complete(self.backend.close())
        self.loop.close()


@pytest.fixture(scope="module")
def existing(sandbox: Sandbox) -> Iterator[str]:
    name = f"fuzz-{uuid.uuid4().hex[:6]}"
    ok("launch", name, "--type", "t3.micro")
    yield name
    ok("terminate", name, "--yes")


@pytest.fixture(scope="module")
def runner(sandbox: Sandbox) -> Iterator[Runner]:
    r = Runner()
    yield r
    r.close()


def check(status: int, err: str, what: object) -> None:
    assert "Traceback" not in err and "unexpected error" not in err, (what, err)
    assert status in (0, 1, 2), (what, status, err)
    if status:
        lines = [line for line in err.splitlines() if line.strip()]
        assert lines and lines[-1].startswith("cloudsh: "), (what, err)
        assert sum(line.startswith("cloudsh: ") for line in lines) == 1, (what, err)


FUZZ = settings(max_examples=120, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def test_random_command_lines_fail_in_one_line_and_create_nothing(
    sandbox: Sandbox, existing: str, runner: Runner
) -> None:
    before = inventory(sandbox)

    @FUZZ
    @given(words=command_lines(existing))
    def as_words(words: list[str]) -> None:
        check(*runner.run(words), words)

    @FUZZ
    @given(words=command_lines(existing), cut=st.integers(0, 200), junk=st.sampled_from(["'", '"', "\\", ""]))
    def as_typed_lines(words: list[str], cut: int, junk: str) -> None:
        # A line as typed: words joined raw (quotes unbalanced at times), possibly cut short.
        line = " ".join(words)
        line = line[: cut if cut < len(line) else len(line)] + junk
        if POISON in words and POISON not in line:
            return  # a creating command cut before its poison could be valid: not fuzzed here
        check(*runner.run(None, line), line)

    as_words()
    as_typed_lines()
    assert inventory(sandbox) == before


def test_an_unparseable_line_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="cannot parse the line"):
        REGISTRY.prepare_line("run box -- echo 'unbalanced")

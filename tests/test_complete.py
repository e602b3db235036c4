"""Completion of the command language: pure, from an index, for every argument kind."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cloudsh.commands.complete import (
    CompletionIndex,
    build_index,
    command_help,
    complete,
    index_from_json,
    index_to_json,
)
from cloudsh.errors import AWSError

INDEX = CompletionIndex(
    instances=("box", "bob", "trainer", "i-0abc123"),
    types=("t3.medium", "g5.xlarge", "g5.2xlarge", "p4d.24xlarge"),
    images=("my-image", "ami-0123"),
    volumes=("data", "vol-0aa"),
    families=("g5", "p4d", "t3"),
    details={"box": "i-0abc123 running t3.medium"},
)


def texts(line: str, cursor: int | None = None) -> list[str]:
    return [c.text for c in complete(line, cursor, INDEX)]


def test_commands_and_two_word_commands() -> None:
    assert texts("la") == ["launch "]
    assert "ls " in texts("l") and "list " in texts("l")
    assert texts("sa") == ["sandbox "]
    assert texts("sandbox ") == ["address ", "capacity ", "down ", "env ", "interrupt ", "quota ", "status ", "up "]
    assert texts("sandbox u") == ["up "]
    first = complete("", None, INDEX)
    assert {"launch ", "run ", "help "} <= {c.text for c in first}
    assert next(c for c in first if c.text == "launch ").meta.startswith("Launch a new instance")


def test_instance_names_with_their_details() -> None:
    got = complete("run b", None, INDEX)
    assert [c.text for c in got] == ["box ", "bob "]  # a whole value: the next word follows
    assert got[0].start == 4 and got[0].meta == "i-0abc123 running t3.medium"
    # Several names for the commands that take several.
    assert texts("stop box t") == ["trainer "]
    # A substring matches when nothing starts with it.
    assert texts("run rain") == ["trainer "]
    assert texts("resize ") == [f"{name} " for name in INDEX.instances]


def test_types_options_and_values() -> None:
    assert texts("launch x --t") == ["--type"]
    assert texts("launch x --type g5") == ["g5.xlarge ", "g5.2xlarge "]
    got = complete("launch x --type=g5.2", None, INDEX)
    assert [(c.text, c.start) for c in got] == [("g5.2xlarge ", len("launch x --type="))]
    assert texts("resize box p4") == ["p4d.24xlarge "]
    assert texts("launch x --image my") == ["my-image "]
    assert texts("prices -f ") == ["g5 ", "p4d ", "t3 "]
    # Used options are not offered again; repeatable ones are.
    assert "--spot" not in texts("launch x --spot --")
    assert "--family" in texts("prices --family g5 --")
    assert "--yes" in texts("terminate box --")


def test_run_wants_a_double_dash_then_free_text() -> None:
    assert texts("run box ") == ["--"]
    assert texts("run box -- nvid") == []
    assert texts("run box -- ls --") == []


def test_ports_and_local_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert "8888 " in texts("tunnel box ")
    assert texts("tunnel box 60") == ["6006 "]
    assert texts("connect box -L 88") == ["8888 "]
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.py").write_text("")
    (tmp_path / "my file.txt").write_text("")
    monkeypatch.chdir(tmp_path)
    assert texts("put box da") == ["data/"]
    assert texts("put box data/tr") == ["data/train.py"]
    assert texts("put box my") == ["'my file.txt'"]
    assert texts(f"get box /remote {tmp_path}/da") == [f"{tmp_path}/data/"]


def test_cursor_in_the_middle_and_quotes() -> None:
    line = "run b -- ls"
    got = complete(line, 5, INDEX)
    assert [(c.text, c.start) for c in got] == [("box", 4), ("bob", 4)]  # a space follows already
    assert [(c.text, c.start) for c in complete("run 'tr", None, INDEX)] == [("trainer ", 4)]
    assert texts("help la") == ["launch "]


def test_nothing_for_unknown_commands() -> None:
    assert texts("xyz ") == []
    assert texts("zz") == []


def test_inline_help() -> None:
    text = command_help("launch ")
    assert text is not None and text.startswith("launch ") and "--spot" in text
    assert "Launch a new instance" in text
    opt = command_help("launch x --type")
    assert opt is not None and opt.startswith("--type: instance type")
    assert command_help("sandbox") == "sandbox address|capacity|down|env|interrupt|quota|status|up"
    assert command_help("") is None and command_help("frobnicate") is None
    run_help = command_help("run box -- nvidia-smi")
    assert run_help is not None and run_help.startswith("run ")


def test_index_roundtrips_through_json() -> None:
    label, back = index_from_json(json.loads(json.dumps(index_to_json(INDEX, "SANDBOX"))))
    assert label == "SANDBOX" and back == INDEX and back.details == INDEX.details
    with pytest.raises(ValueError):
        index_from_json({"instances": []})


class _Flaky:
    """A backend whose volume listing fails: the other kinds still fill the index."""

    def __init__(self, real: Any) -> None:
        self.ec2 = self
        self._real = real.ec2

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    async def volumes(self) -> Any:
        raise AWSError("UnauthorizedOperation", "ask for ec2:DescribeVolumes", code="UnauthorizedOperation")


@pytest.mark.sandbox
async def test_build_index_on_the_sandbox_tolerates_a_failing_kind() -> None:
    from cloudsh.api import Cloud

    cloud = Cloud(sandbox=True)
    box = await cloud.alaunch("completebox", "t3.micro", wait=False)
    try:
        index = await build_index(_Flaky(cloud.backend))  # type: ignore[arg-type]
        assert "completebox" in index.instances and box.id in index.instances
        assert "g5.xlarge" in index.types and "g5" in index.families
        assert index.volumes == ()
        assert "us-east-1" in index.regions
        assert index.details["completebox"].startswith(box.id)
    finally:
        await box.aterminate()
        await cloud.backend.close()

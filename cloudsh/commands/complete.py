"""Completion for the command language, shared by the REPL and the TUI command line.

Pure and index-driven: `complete()` only reads a `CompletionIndex` (and, for `path`
arguments, the local directory being typed), so a keystroke never waits for the
cloud. `build_index()` does the listing, one call per kind, in the background.
Front ends adapt `Completion` to their prompt library; nothing here imports one.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from cloudsh.commands.registry import REGISTRY, Arg, Command, Registry

if TYPE_CHECKING:
    from cloudsh.models import Image, Instance, Snapshot, Volume
    from cloudsh.services.backend import Backend

log = logging.getLogger(__name__)

#: EC2 commercial regions; a fixed list so completing `--region` needs no API call.
REGIONS = (
    "af-south-1", "ap-east-1", "ap-northeast-1", "ap-northeast-2", "ap-northeast-3",
    "ap-south-1", "ap-south-2", "ap-southeast-1", "ap-southeast-2", "ap-southeast-3",
    "ap-southeast-4", "ca-central-1", "ca-west-1", "eu-central-1", "eu-central-2",
    "eu-north-1", "eu-south-1", "eu-south-2", "eu-west-1", "eu-west-2", "eu-west-3",
    "il-central-1", "me-central-1", "me-south-1", "sa-east-1", "us-east-1", "us-east-2",
    "us-west-1", "us-west-2",
)

#: Ports people forward to a GPU box, with what usually listens there.
PORTS = {
    "8888": "Jupyter",
    "6006": "TensorBoard",
    "7860": "Gradio",
    "8501": "Streamlit",
    "8000": "HTTP server / vLLM",
    "8080": "web app",
    "5000": "Flask / MLflow",
    "3000": "Grafana / dev server",
}

#: Words the front ends understand besides the registry's commands.
BUILTINS = {"help": "show the commands, or one command's usage"}


@dataclass(frozen=True)
class CompletionIndex:
    """What can be completed, by argument kind. Instances hold names and ids."""

    instances: tuple[str, ...] = ()
    types: tuple[str, ...] = ()
    images: tuple[str, ...] = ()
    volumes: tuple[str, ...] = ()
    snapshots: tuple[str, ...] = ()
    jobs: tuple[str, ...] = ()
    regions: tuple[str, ...] = REGIONS
    families: tuple[str, ...] = ()
    #: One line shown next to a value (an instance's id, state and type, …).
    details: Mapping[str, str] = field(default_factory=dict, compare=False, hash=False)

    def values(self, kind: str) -> tuple[str, ...]:
        plural = {"instance": "instances", "type": "types", "image": "images", "volume": "volumes",
                  "snapshot": "snapshots", "job": "jobs", "region": "regions", "family": "families"}
        attr = plural.get(kind)
        return getattr(self, attr) if attr else ()


@dataclass(frozen=True)
class Completion:
    """Replace `line[start:cursor]` with `text`."""

    text: str
    start: int
    display: str = ""
    meta: str = ""


# -- building the index ---------------------------------------------------------


class Box(Protocol):
    """What the index needs of an instance (`models.Instance`, the TUI's rows)."""

    @property
    def id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def state(self) -> str: ...
    @property
    def type(self) -> str: ...


def index_from(
    *,
    instances: Iterable[Box] = (),
    jobs: Mapping[str, str] | None = None,
    types: Iterable[str] = (),
    images: Iterable[Image] = (),
    volumes: Iterable[Volume] = (),
    snapshots: Iterable[Snapshot] = (),
) -> CompletionIndex:
    """The index of what a front end has listed; `jobs` maps a job id to its box's name.

    The one builder: the REPL feeds it from `build_index`'s listings, the TUI from the
    rows its panes already hold.
    """
    details: dict[str, str] = {}
    names: list[str] = []
    for i in instances:
        if i.name:
            names.append(i.name)
            details[i.name] = f"{i.id} {i.state} {i.type}"
        names.append(i.id)
        details[i.id] = f"{i.name or '-'} {i.state} {i.type}"
    for job_id, box in (jobs or {}).items():
        details[job_id] = f"job on {box}"
    image_words: list[str] = []
    for im in images:
        image_words.extend(x for x in (im.name, im.id) if x)
        details[im.id] = f"{im.name} {im.state}"
    volume_words: list[str] = []
    for v in volumes:
        volume_words.extend(x for x in (v.name, v.id) if x)
        details[v.id] = f"{v.name or '-'} {v.size_gb} GB {v.state}"
    snapshot_words: list[str] = []
    for sn in snapshots:
        snapshot_words.extend(x for x in (sn.name, sn.id) if x)
        details[sn.id] = f"{sn.name or '-'} {sn.size_gb} GB {sn.state}"
    type_names = _unique(types)
    return CompletionIndex(
        instances=_unique(names), types=type_names, images=_unique(image_words), volumes=_unique(volume_words),
        snapshots=_unique(snapshot_words), jobs=_unique(jobs or ()),
        families=tuple(sorted(_unique(t.split(".", 1)[0] for t in type_names))), details=details,
    )


async def build_index(backend: Backend, instances: Sequence[Instance] | None = None) -> CompletionIndex:
    """List every kind once (the instances unless given), concurrently, and index it; a
    kind whose listing fails stays empty (completion is a convenience: one unreachable
    listing must not empty the rest)."""
    from cloudsh.models import job_tags

    ec2 = backend.ec2
    listings = {"types": ec2.type_names(), "images": ec2.images(), "volumes": ec2.volumes(),
                "snapshots": ec2.snapshots()}
    if instances is None:
        listings["instances"] = ec2.list_instances()
    results = await asyncio.gather(*listings.values(), return_exceptions=True)
    found: dict[str, Any] = {} if instances is None else {"instances": instances}
    for kind, result in zip(listings, results, strict=True):
        if isinstance(result, BaseException):
            if isinstance(result, asyncio.CancelledError):
                raise result
            log.debug("completion index: listing %s failed: %s", kind, result)
            found[kind] = ()
        else:
            found[kind] = result
    # Jobs live in their box's tags: the same listing names them, no extra call.
    jobs = {job_id: i.label for i in found["instances"] for job_id in job_tags(i)}
    return index_from(jobs=jobs, **found)


_KINDS = ("instances", "types", "images", "volumes", "snapshots", "jobs", "regions", "families")


def index_to_json(index: CompletionIndex, label: str) -> dict[str, Any]:
    """The index as JSON, to show last session's names before the first listing returns."""
    return {"label": label, **{k: list(getattr(index, k)) for k in _KINDS}, "details": dict(index.details)}


def index_from_json(data: Mapping[str, Any]) -> tuple[str, CompletionIndex]:
    """(label, index) from `index_to_json`; raises ValueError on a malformed document."""
    try:
        kinds = {k: tuple(str(v) for v in data.get(k, ())) for k in _KINDS}
        details = {str(k): str(v) for k, v in dict(data.get("details", {})).items()}
        return str(data["label"]), CompletionIndex(**kinds, details=details)
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"not a completion index: {exc}") from None


def _unique(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(values))


# -- splitting the line -----------------------------------------------------------


@dataclass(frozen=True)
class _Word:
    text: str  # unquoted
    start: int  # offset of its first character in the line


def _split(line: str) -> tuple[list[_Word], _Word]:
    """Words before the cursor, and the (possibly empty) word being typed.

    Tolerates an unclosed quote, which `shlex.split` does not.
    """
    words: list[_Word] = []
    buf: list[str] = []
    start = -1
    quote = ""
    i = 0
    while i < len(line):
        ch = line[i]
        if quote:
            if ch == quote:
                quote = ""
            elif ch == "\\" and quote == '"' and i + 1 < len(line):
                i += 1
                buf.append(line[i])
            else:
                buf.append(ch)
        elif ch.isspace():
            if start >= 0:
                words.append(_Word("".join(buf), start))
                buf, start = [], -1
        else:
            if start < 0:
                start = i
            if ch in "'\"":
                quote = ch
            elif ch == "\\" and i + 1 < len(line):
                i += 1
                buf.append(line[i])
            else:
                buf.append(ch)
        i += 1
    if start >= 0:
        return words, _Word("".join(buf), start)
    return words, _Word("", len(line))


def _quote(value: str) -> str:
    return value if value and all(c.isalnum() or c in "-_.:/~@=+,%" for c in value) else shlex.quote(value)


def _match(prefix: str, values: Iterable[str], start: int, meta: Mapping[str, str] | None = None,
           suffix: str = "", substring: bool = True) -> list[Completion]:
    """Prefix matches (case-insensitive); substring matches only when no value starts so."""
    low = prefix.lower()
    head: list[Completion] = []
    tail: list[Completion] = []
    for v in values:
        lv = v.lower()
        if lv.startswith(low):
            bucket = head
        elif substring and low and low in lv:
            bucket = tail
        else:
            continue
        bucket.append(Completion(_quote(v) + suffix, start, v, (meta or {}).get(v, "")))
    return head or tail


# -- what the cursor is on ---------------------------------------------------------


def _option(cmd: Command, word: str) -> Arg | None:
    for a in cmd.args:
        if not a.positional and word in a.names:
            return a
    return None


@dataclass
class _State:
    cmd: Command
    #: The argument whose value is being typed, if any.
    value_of: Arg | None = None
    #: After `--` of a REMAINDER argument: free text.
    free: bool = False
    used: set[str] = field(default_factory=set)
    remainder_pending: bool = False


def _walk(cmd: Command, words: Sequence[str]) -> _State:
    """Follow the words after the command name to find what the next word is."""
    positionals = [a for a in cmd.args if a.positional]
    st = _State(cmd)
    pos = 0
    expect: Arg | None = None
    for w in words:
        if st.free:
            continue
        if expect is not None:
            expect = None
            continue
        current = positionals[pos] if pos < len(positionals) else None
        if current is not None and current.nargs == "...":
            st.free = True
            continue
        if w.startswith("-") and w != "-":
            opt = _option(cmd, w.split("=", 1)[0])
            if opt is not None:
                st.used.add(opt.dest)
                if not opt.flag and "=" not in w:
                    expect = opt
            continue
        if current is not None and current.nargs not in ("+", "*"):
            pos += 1
    st.value_of = expect
    if expect is None and not st.free and pos < len(positionals):
        p = positionals[pos]
        if p.nargs == "...":
            st.remainder_pending = True
        else:
            st.value_of = p
    return st


def _resolve(words: Sequence[str], registry: Registry) -> tuple[Command | None, int]:
    """The command named by the leading words, and how many words its name took."""
    for length in (2, 1):
        if len(words) >= length:
            name = " ".join(words[:length])
            name = registry.aliases.get(name, name)
            if name in registry.commands:
                return registry.commands[name], length
    return None, 0


def _values(a: Arg, prefix: str, start: int, index: CompletionIndex) -> list[Completion]:
    if a.choices:
        return _match(prefix, a.choices, start)
    if a.kind == "path":
        return _paths(prefix, start)
    if a.kind == "port":
        return _match(prefix, PORTS, start, PORTS)
    return _match(prefix, index.values(a.kind), start, index.details)


def _paths(prefix: str, start: int) -> list[Completion]:
    """Local files and directories under the directory being typed (one scandir)."""
    head, _, tail = prefix.rpartition("/")
    base = head + "/" if prefix.count("/") else ""
    folder = os.path.expanduser(head or "/") if base else "."
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:
        return []
    out: list[Completion] = []
    for e in entries:
        if not e.name.startswith(tail) or (e.name.startswith(".") and not tail.startswith(".")):
            continue
        is_dir = e.is_dir()
        text = base + e.name + ("/" if is_dir else "")
        out.append(Completion(_quote(text), start, e.name + ("/" if is_dir else ""), "directory" if is_dir else ""))
    return out


def complete(
    line: str,
    cursor: int | None,
    index: CompletionIndex,
    *,
    registry: Registry = REGISTRY,
    builtins: Mapping[str, str] = BUILTINS,
) -> list[Completion]:
    """Completions for the word under the cursor (`cursor=None` means the end of the line)."""
    text = line if cursor is None else line[:cursor]
    done, cur = _split(text)
    words = [w.text for w in done]
    prefix, start = cur.text, cur.start

    if not words:
        return _command_words(prefix, start, registry, builtins)
    if words[0] == "help" and "help" in builtins:
        return _command_words(prefix, start, registry, {}) if len(words) == 1 else []

    cmd, used = _resolve(words, registry)
    if cmd is None:
        group = words[0]
        if len(words) == 1 and group in registry.groups():
            subs = {n.split(" ", 1)[1]: c.summary for n, c in registry.commands.items() if n.startswith(group + " ")}
            return _match(prefix, sorted(subs), start, subs, suffix=" ", substring=False)
        return []

    st = _walk(cmd, words[used:])
    if st.free:
        return []
    # `--opt=val`: complete the value after `=`.
    if (st.value_of is None or st.value_of.positional) and prefix.startswith("--") and "=" in prefix:
        name, _, val = prefix.partition("=")
        opt = _option(cmd, name)
        return _values(opt, val, start + len(name) + 1, index) if opt and not opt.flag else []
    if st.value_of is not None and not st.value_of.positional:
        return _values(st.value_of, prefix, start, index)
    if st.remainder_pending:
        return [Completion("--", start, "--", "then the command to run")] if "--".startswith(prefix) else []
    if prefix.startswith("-") or st.value_of is None:
        return _options(cmd, st, prefix, start)
    return _values(st.value_of, prefix, start, index)


def _command_words(prefix: str, start: int, registry: Registry, builtins: Mapping[str, str]) -> list[Completion]:
    meta: dict[str, str] = {}
    for name, cmd in sorted(registry.commands.items()):
        first = name.split(" ", 1)[0]
        if " " in name:
            meta.setdefault(first, "")
            subs = sorted(n.split(" ", 1)[1] for n in registry.commands if n.startswith(first + " "))
            meta[first] = "|".join(subs)
        else:
            meta[name] = cmd.summary
    for alias, target in registry.aliases.items():
        if " " not in alias:
            meta.setdefault(alias, f"= {target}")
    for word, help_ in builtins.items():
        meta.setdefault(word, help_)
    return _match(prefix, sorted(meta), start, meta, suffix=" ", substring=False)


def _options(cmd: Command, st: _State, prefix: str, start: int) -> list[Completion]:
    opts: dict[str, str] = {}
    for a in cmd.args:
        if a.positional or (a.dest in st.used and not a.repeat):
            continue
        long = next((n for n in a.names if n.startswith("--")), a.names[0])
        opts[long] = a.help
    opts.setdefault("--help", "show this command's usage")
    return _match(prefix, opts, start, opts, substring=False)


# -- inline help ----------------------------------------------------------------


def command_help(line: str, cursor: int | None = None, *, registry: Registry = REGISTRY) -> str | None:
    """`usage — summary` of the command being typed (plus the option under the cursor)."""
    text = line if cursor is None else line[:cursor]
    done, cur = _split(text)
    words = [w.text for w in done] + ([cur.text] if cur.text else [])
    if not words:
        return None
    if words[0] == "help":
        return "help [COMMAND] — " + BUILTINS["help"]
    cmd, used = _resolve(words, registry)
    if cmd is None:
        group = words[0]
        if group in registry.groups():
            subs = sorted(n.split(" ", 1)[1] for n in registry.commands if n.startswith(group + " "))
            return f"{group} {'|'.join(subs)}"
        return None
    usage = cmd.usage().removeprefix("usage: ").removeprefix("cloudsh ")
    usage = " ".join(usage.split()).replace(" [-h]", "", 1)
    out = f"{usage} — {cmd.summary}"
    # The option just typed (or whose value is being typed) says what it is for.
    for w in reversed(words[used:]):
        if w.startswith("-"):
            opt = _option(cmd, w.split("=", 1)[0])
            if opt is not None and opt.help:
                out = f"{w.split('=', 1)[0]}: {opt.help} · {out}"
            break
    return out

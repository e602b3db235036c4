"""The one command language: every command is declared once here and served by the
CLI, the TUI command line, the command palette and the REPL alike.

A command is data (name, help, arguments with completion hints) plus an async handler
that talks to the world only through a `Context`: the cloud (`ctx.backend`), output
(`ctx.out`), confirmation (`ctx.confirm`) and the terminal (`ctx.terminal`). Front
ends differ only in the `Context` they build.

Every front end runs a line the same way: `REGISTRY.prepare_line(line)` (or `prepare`
for argv) settles quoting, `help X` / `X --help` and usage errors, and says whether the
command needs the cloud (`Command.needs_backend`); `Prepared.run(ctx)` runs it.
"""

from __future__ import annotations

import argparse
import difflib
import shlex
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from cloudsh.errors import ConfirmationRefused, Declined, UsageError

if TYPE_CHECKING:
    from cloudsh.services.backend import Backend


class Output(Protocol):
    """Where a command's results go: stdout/stderr in the CLI, a pane in the TUI."""

    def print(self, text: str = "") -> None:
        """One line (or block) of the command's result."""

    def json(self, data: Any) -> None:
        """The command's result as one JSON document."""

    def info(self, text: str) -> None:
        """Progress and notes for a person (stderr in the CLI), never part of the result."""

    def write(self, chunk: str, *, err: bool = False) -> None:
        """Streamed output (e.g. a remote command's stdout), written as it arrives."""


Confirm = Callable[[str], Awaitable[bool]]
#: Hands the terminal to an external program (OpenSSH `ssh`) and returns its exit status.
Terminal = Callable[[Sequence[str]], Awaitable[int]]


@dataclass
class Context:
    """What a handler may use. `confirm`/`terminal` are None where there is no terminal."""

    out: Output
    backend_factory: Callable[[], Backend]
    confirm: Confirm | None = None
    terminal: Terminal | None = None
    _backend: Backend | None = field(default=None, repr=False)

    @property
    def backend(self) -> Backend:
        if self._backend is None:
            self._backend = self.backend_factory()
            self._backend.tell = self.out.info
            if self._backend.notice:
                self.out.info(self._backend.notice)
        return self._backend

    async def confirmed(self, question: str, *, yes: bool, what: str) -> None:
        """Ask before a destructive action; `--yes` skips the question, nothing else."""
        if yes:
            return
        if self.confirm is None:
            raise ConfirmationRefused(
                f"refusing to {what} without confirmation (no terminal to ask on)",
                "pass --yes to confirm",
            )
        if not await self.confirm(question):
            raise Declined(f"did not {what}", "nothing was changed")


Handler = Callable[[Context, argparse.Namespace], Awaitable[int | None]]


@dataclass(frozen=True)
class Arg:
    """One argument. `kind` drives completion: instance, type, image, volume, snapshot,
    job, region, path, port, family; empty means free text."""

    names: tuple[str, ...]
    help: str = ""
    kind: str = ""
    nargs: str | int | None = None
    default: Any = None
    flag: bool = False
    repeat: bool = False
    metavar: str | None = None
    type: Callable[[str], Any] | None = None
    choices: tuple[str, ...] | None = None

    @property
    def positional(self) -> bool:
        return not self.names[0].startswith("-")

    @property
    def dest(self) -> str:
        name = next((n for n in self.names if n.startswith("--")), self.names[0])
        return name.lstrip("-").replace("-", "_")


def gigabytes(text: str) -> int:
    """An `Arg.type` for sizes in GB: a positive whole number."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of GB") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value} GB must be positive")
    return value


def arg(*names: str, **kw: Any) -> Arg:
    return Arg(names=names, **kw)


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    args: tuple[Arg, ...]
    handler: Handler
    destructive: bool = False
    #: Needs the terminal (interactive ssh): front ends hand it over.
    takes_terminal: bool = False
    aliases: tuple[str, ...] = ()
    #: Free text after the arguments (for `run NAME -- CMD…`).
    epilog: str = ""
    #: Talks to the cloud through `ctx.backend`: front ends connect before running it
    #: (and refuse it while they cannot). False for commands that manage the sandbox
    #: itself, which must work while no cloud is reachable.
    needs_backend: bool = True

    @property
    def summary(self) -> str:
        return self.help.split("\n", 1)[0]

    def usage(self) -> str:
        return self.parser().format_usage().strip()

    def parser(self) -> argparse.ArgumentParser:
        p = _Parser(
            prog=f"cloudsh {self.name}",
            description=self.help,
            epilog=self.epilog or None,
            formatter_class=argparse.RawDescriptionHelpFormatter,
            exit_on_error=False,
        )
        for a in self.args:
            kw: dict[str, Any] = {"help": a.help}
            if a.flag:
                kw["action"] = "store_true"
            else:
                if a.repeat:
                    kw["action"] = "append"
                if a.nargs is not None:
                    kw["nargs"] = a.nargs
                if a.default is not None:
                    kw["default"] = a.default
                if a.metavar:
                    kw["metavar"] = a.metavar
                if a.type:
                    kw["type"] = a.type
                if a.choices:
                    kw["choices"] = a.choices
            if not a.positional:
                kw["dest"] = a.dest
            p.add_argument(*a.names, **kw)
        return p

    def parse(self, argv: Sequence[str]) -> argparse.Namespace:
        parser = self.parser()
        try:
            return parser.parse_args(list(argv))
        except argparse.ArgumentError as exc:
            # With exit_on_error=False, argparse raises bad values (a failed `type=`)
            # instead of reporting them: report them as every other usage error.
            return parser.error(str(exc))


class HelpRequested(Exception):
    """`--help` was asked for: the text to show (exit status 0)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


@dataclass(frozen=True)
class Prepared:
    """A line made ready to run (`Registry.prepare`): either `command` with its parsed
    `namespace`, or `help_text` to show (then `command` is the one asked about, if any)."""

    words: tuple[str, ...]
    command: Command | None = None
    namespace: argparse.Namespace | None = None
    help_text: str | None = None

    @property
    def needs_backend(self) -> bool:
        """Running it needs the cloud (help never does)."""
        return self.namespace is not None and self.command is not None and self.command.needs_backend

    @property
    def takes_terminal(self) -> bool:
        return self.namespace is not None and self.command is not None and self.command.takes_terminal

    async def run(self, ctx: Context) -> int:
        """Run the command (or print the help) through `ctx`; its exit status."""
        if self.command is None or self.namespace is None:
            ctx.out.print(self.help_text or "")
            return 0
        status = await self.command.handler(ctx, self.namespace)
        return int(status or 0)


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of printing and exiting, so every front end decides."""

    def error(self, message: str) -> Any:
        usage = " ".join(self.format_usage().split()[1:])
        raise UsageError(f"{self.prog.removeprefix('cloudsh ')}: {message}", f"usage: {usage}")

    def exit(self, status: int = 0, message: str | None = None) -> Any:
        if status:
            raise UsageError(message or f"{self.prog}: invalid arguments", "")
        raise HelpRequested(self.format_help())

    def print_help(self, file: Any = None) -> None:
        raise HelpRequested(self.format_help())


class Registry:
    def __init__(self) -> None:
        self.commands: dict[str, Command] = {}
        self._aliases: dict[str, str] = {}

    def add(self, cmd: Command) -> None:
        if cmd.name in self.commands:
            raise ValueError(f"command {cmd.name!r} declared twice")
        self.commands[cmd.name] = cmd
        for alias in cmd.aliases:
            self._aliases[alias] = cmd.name

    @property
    def aliases(self) -> dict[str, str]:
        """alias -> command name."""
        return dict(self._aliases)

    def names(self) -> list[str]:
        return sorted(self.commands)

    def groups(self) -> set[str]:
        """First words of multi-word commands (`sandbox`, `volume`, …)."""
        return {n.split()[0] for n in self.commands if " " in n}

    def lookup(self, words: Sequence[str]) -> tuple[Command, list[str]]:
        """The command named by the leading words, and the remaining arguments."""
        if not words:
            raise UsageError("no command given", "try `help`")
        for length in (2, 1):
            if len(words) >= length:
                name = " ".join(words[:length])
                name = self._aliases.get(name, name)
                if name in self.commands:
                    return self.commands[name], list(words[length:])
        first = words[0]
        if first in self.groups():
            subs = sorted(n.split(" ", 1)[1] for n in self.commands if n.startswith(first + " "))
            if len(words) > 1:
                guess = difflib.get_close_matches(words[1], subs, n=1)
                hint = f"did you mean `{first} {guess[0]}`?" if guess else f"one of: {', '.join(subs)}"
                raise UsageError(f"unknown command `{first} {words[1]}`", hint)
            raise UsageError(f"`{first}` needs a subcommand", f"one of: {', '.join(subs)}")
        candidates = [n.split()[0] for n in self.commands] + list(self._aliases)
        guess = difflib.get_close_matches(first, sorted(set(candidates)), n=1)
        hint = f"did you mean `{guess[0]}`?" if guess else "see `cloudsh --help` for the commands"
        raise UsageError(f"unknown command `{first}`", hint)

    def prepare(self, words: Sequence[str], *, overview: str = "{commands}") -> Prepared:
        """What a command line asks for, the same in every front end: a parsed command,
        or help text (`help`, `help X`, `X --help`). Bad words raise `UsageError`.

        `overview` frames the list of commands shown for a bare `help` (`{commands}` is
        replaced by it), so each front end can say what else it understands.
        """
        words = list(words)
        if words in (["help"], ["--help"], ["-h"]):
            return Prepared(tuple(words), help_text=overview.format(commands=self.help_text()))
        if words[:1] == ["help"]:
            words = words[1:] + ["--help"]
        cmd, rest = self.lookup(words)
        try:
            return Prepared(tuple(words), cmd, cmd.parse(rest))
        except HelpRequested as h:
            return Prepared(tuple(words), cmd, help_text=h.text.rstrip())

    def prepare_line(self, line: str, *, overview: str = "{commands}") -> Prepared | None:
        """`prepare` for a typed line (quotes as in a shell); None for a blank line."""
        try:
            words = shlex.split(line)
        except ValueError as exc:
            raise UsageError(f"cannot parse the line: {exc}", "check the quotes") from None
        return self.prepare(words, overview=overview) if words else None

    def help_text(self) -> str:
        width = max(len(n) for n in self.commands)
        return "\n".join(f"  {n.ljust(width)}  {c.summary}" for n, c in sorted(self.commands.items()))

    def __iter__(self) -> Iterator[Command]:
        return iter(self.commands.values())


REGISTRY = Registry()


def command(
    name: str,
    help: str,
    *args: Arg,
    destructive: bool = False,
    takes_terminal: bool = False,
    aliases: tuple[str, ...] = (),
    epilog: str = "",
    needs_backend: bool = True,
) -> Callable[[Handler], Handler]:
    """Declare a command: `@command("ls", "list instances", arg("--all", flag=True))`."""

    def register(fn: Handler) -> Handler:
        extra = (arg("--yes", "-y", flag=True, help="do not ask for confirmation"),) if destructive else ()
        REGISTRY.add(
            Command(
                name=name,
                help=help,
                args=tuple(args) + extra,
                handler=fn,
                destructive=destructive,
                takes_terminal=takes_terminal,
                aliases=aliases,
                epilog=epilog,
                needs_backend=needs_backend,
            )
        )
        return fn

    return register


async def dispatch(ctx: Context, words: Sequence[str]) -> int:
    """Parse and run one command (help is printed to `ctx.out`); returns its exit status.
    Errors propagate to the front end."""
    return await REGISTRY.prepare(words).run(ctx)

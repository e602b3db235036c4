#!/usr/bin/env python3
"""Sandbox stand-in for `crontab`: the box user's crontab, kept on the box's own disk.

On Ubuntu, cron keeps it in /var/spool/cron/crontabs/ubuntu and runs its `@reboot` lines
each time the machine boots; the sandbox does the same at each boot of the box
(`cloudsh/sandbox/cron.py`). Where the file lives is in `crontab.json` beside this
program. Answers as Debian's crontab does: `crontab -l`, `crontab -r`, `crontab FILE`,
`crontab -` (from stdin).

Standard library only, nothing from cloudsh: it runs with the box's own `python3`.
"""

from __future__ import annotations

import json
import os
import sys

CONFIG = "crontab.json"
USER = "ubuntu"


def table_path() -> str:
    here = os.path.dirname(os.path.realpath(__file__))
    with open(os.path.join(here, CONFIG)) as f:
        return os.path.join(str(json.load(f)["dir"]), USER)


def main(argv: list[str]) -> int:
    path = table_path()
    if argv in (["-l"], ["-r"]):
        if not os.path.exists(path):
            sys.stderr.write(f"no crontab for {USER}\n")
            return 1
        if argv == ["-l"]:
            with open(path) as f:
                sys.stdout.write(f.read())
        else:
            os.unlink(path)
        return 0
    if len(argv) != 1 or argv[0].startswith("-") and argv[0] != "-":
        sys.stderr.write("usage: crontab [-l | -r | FILE | -]\n")
        return 1
    try:
        text = sys.stdin.read() if argv[0] == "-" else open(argv[0]).read()  # noqa: SIM115
    except OSError as e:
        sys.stderr.write(f"{argv[0]}: {e.strerror}\n")
        return 1
    if text and not text.endswith("\n"):
        sys.stderr.write('new crontab file is missing newline before EOF, can\'t install.\n')
        return 1
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

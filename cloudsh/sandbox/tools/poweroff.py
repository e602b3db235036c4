#!/usr/bin/env python3
"""Sandbox stand-in for `shutdown` and `poweroff`: the box powers itself off.

On EC2 an instance that shuts down from inside stops (or terminates, as its
instance-initiated shutdown behaviour says; "Change the instance initiated shutdown
behavior", EC2 user guide). Here the program asks the sandbox daemon, through the box's
instance metadata relay (`poweroff.json` beside it names this box's endpoint), to do what
EC2 does. As on Ubuntu, it needs root: run it with `sudo` (an SSH user without it is
refused). `shutdown -r` / `reboot` and delayed shutdowns (`+5`) are not played.

Standard library only, nothing from cloudsh: it runs with the box's own `python3`.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.request

CONFIG = "poweroff.json"
NAMES = ("shutdown", "poweroff")


def endpoint() -> str:
    here = os.path.dirname(os.path.realpath(__file__))
    with open(os.path.join(here, CONFIG)) as f:
        return str(json.load(f)["endpoint"])


def main(name: str, argv: list[str]) -> int:
    flags = [a for a in argv if a.startswith("-")]
    when = [a for a in argv if not a.startswith("-")]
    if any(f in ("-r", "--reboot") for f in flags):
        sys.stderr.write(f"{name}: reboot is not played by the sandbox; stop and start the box instead\n")
        return 1
    if name == "shutdown" and when[:1] not in ([], ["now"], ["+0"]):
        sys.stderr.write(f"{name}: only `shutdown -h now` is played by the sandbox\n")
        return 1
    if "SUDO_USER" not in os.environ:
        sys.stderr.write("Failed to set wall message, ignoring: Interactive authentication required.\n"
                         "Call to PowerOff failed: Access denied (run it with sudo)\n")
        return 1
    req = urllib.request.Request(endpoint() + "/_sandbox/poweroff", data=b"{}", method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            r.read()
    except OSError as e:
        sys.stderr.write(f"{name}: {e}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(os.path.basename(sys.argv[0]), sys.argv[1:]))

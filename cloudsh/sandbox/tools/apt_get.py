#!/usr/bin/env python3
"""Sandbox stand-in for `apt-get` installing Ubuntu's NVIDIA driver; there is no GPU here.

Installed as `apt-get` in every box's tool dir, with `apt-get.json` beside it
({"mark": DIR}). As root (through `sudo`), `apt-get install nvidia-driver-N-server`
records the driver as installed in DIR, where the sandbox finds it at the box's next boot:
as with the real driver, `nvidia-smi` works only after the reboot, and only on a type with
an NVIDIA GPU. `apt-get update` answers as a box with nothing new would. Anything else
goes to the machine's own `apt-get`.

Standard library only, nothing from cloudsh: it runs with the box's own `python3`.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time

CONFIG = "apt-get.json"
MARK = "driver.json"
_DRIVER = re.compile(r"^nvidia-driver-(\d+)(-server)?(-open)?$")


def real(args: list[str]) -> int:
    here = os.path.dirname(os.path.abspath(__file__))
    for d in os.environ.get("PATH", "").split(":"):
        path = os.path.join(d, "apt-get")
        if d and os.path.abspath(d) != here and os.access(path, os.X_OK):
            os.execv(path, ["apt-get", *args])
    print("apt-get: command not found", file=sys.stderr)
    return 127


def main(argv: list[str]) -> int:
    words = [a for a in argv if not a.startswith("-")]
    drivers = [w for w in words[1:] if _DRIVER.match(w)]
    if words[:1] not in (["update"], ["install"]) or (words[0] == "install" and not drivers):
        return real(argv)
    if not os.environ.get("SUDO_USER"):
        print("E: Could not open lock file /var/lib/dpkg/lock-frontend - open (13: Permission denied)", file=sys.stderr)
        print("E: Unable to acquire the dpkg frontend lock, are you root?", file=sys.stderr)
        return 100
    if words[0] == "update":
        print("Reading package lists... Done")
        return 0
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), CONFIG)) as f:
        mark = json.load(f)["mark"]
    package = drivers[0]
    for line in ("Reading package lists... Done", "Building dependency tree... Done",
                 f"The following NEW packages will be installed:\n  {package} nvidia-utils-{package[14:]}",
                 f"Setting up {package} ...", "DKMS: install completed.",
                 "*** System restart required ***"):
        print(line, flush=True)
    os.makedirs(mark, exist_ok=True)
    with open(os.path.join(mark, MARK), "w") as f:
        json.dump({"package": package, "installed": time.time()}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

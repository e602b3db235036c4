#!/usr/bin/env python3
"""Sandbox stand-in for lsblk, blkid, mkfs.ext4, mount, umount and sudo, and what a box
does with its volumes at boot (`cloudsh-blk boot`: fstab's lines mounted again).

A sandbox box's EBS volumes are directory trees (see `cloudsh/sandbox/storage.py`), not
block devices. This one program, installed as `cloudsh-blk` in the box's tool dir with
a link per tool name, answers as those tools would from the box's device table
(`devices.json`, written by the sandbox from EC2's block-device mapping) and each
volume's `fs.json` / `mount.json`. Where to find them is in `cloudsh-blk.json` beside it.

Standard library only, nothing from cloudsh: it runs with the box's own `python3`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import uuid
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

    Device = dict[str, Any]

#: The settings file, beside the program: {"volumes": dir, "blk": dir, "isolated": bool}.
CONFIG = "cloudsh-blk.json"
#: Tool names the program answers to (the name it was run as).
TOOLS = ("lsblk", "blkid", "mkfs.ext4", "mount", "umount", "sudo")


class Fail(Exception):
    """The tool's message on stderr, and its exit status."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


class Box:
    """The box's devices as the tools see them."""

    def __init__(self, volumes: str, blk: str, isolated: bool) -> None:
        self.volumes = volumes
        self.blk = blk
        self.isolated = isolated
        self.fstab = os.path.join(blk, "fstab")

    @classmethod
    def load(cls, path: str) -> Box:
        with open(path) as f:
            doc = json.load(f)
        return cls(str(doc["volumes"]), str(doc["blk"]), bool(doc["isolated"]))

    def devices(self) -> list[Device]:
        try:
            with open(os.path.join(self.blk, "devices.json")) as f:
                return list(json.load(f)["devices"])
        except (OSError, ValueError, KeyError):
            return []

    def vdir(self, dev: Device) -> str:
        return os.path.join(self.volumes, dev["volume_id"])

    def fs(self, dev: Device) -> dict[str, Any] | None:
        if dev["root"]:
            return {"type": "ext4", "uuid": "", "label": "cloudimg-rootfs"}
        try:
            with open(os.path.join(self.vdir(dev), "fs.json")) as f:
                return dict(json.load(f))
        except (OSError, ValueError):
            return None

    def mountpoint(self, dev: Device) -> str | None:
        if dev["root"]:
            return "/"
        try:
            with open(os.path.join(self.vdir(dev), "mount.json")) as f:
                return str(json.load(f)["dir"])
        except (OSError, ValueError, KeyError):
            return None

    def find(self, spec: str) -> Device | None:
        """The device `spec` names: /dev/NAME, NAME, UUID=, /dev/disk/by-uuid/, LABEL=."""
        for dev in self.devices():
            f = self.fs(dev)
            if spec in ("/dev/" + dev["name"], dev["name"]):
                return dev
            if f and f.get("uuid") and spec in ("UUID=" + f["uuid"], "/dev/disk/by-uuid/" + f["uuid"]):
                return dev
            if f and f.get("label") and spec == "LABEL=" + f["label"] and not dev["root"]:
                return dev
        return None


def real(name: str, args: list[str]) -> int:
    """Hand over to the system's own tool (for what is not a sandbox volume)."""
    for d in ("/usr/bin", "/bin", "/usr/sbin", "/sbin"):
        if os.path.exists(os.path.join(d, name)):
            os.execv(os.path.join(d, name), [name, *args])
    raise Fail(f"{name}: command not found", 127)


def lsblk(box: Box, args: list[str]) -> int:
    cols, as_json, heading, full = ["NAME", "SIZE", "TYPE", "MOUNTPOINTS"], False, True, False
    i = 0
    while i < len(args):
        a = args[i]
        if a in ("-o", "--output"):
            i += 1
            cols = [c.strip().upper() for c in args[i].split(",") if c.strip()]
        elif a.startswith("--output="):
            cols = [c.strip().upper() for c in a.split("=", 1)[1].split(",")]
        elif a in ("-J", "--json"):
            as_json = True
        elif a in ("-n", "--noheadings"):
            heading = False
        elif a in ("-p", "--paths"):
            full = True
        i += 1
    rows = []
    for dev in box.devices():
        f = box.fs(dev) or {}
        mp = box.mountpoint(dev)
        vals = {
            "NAME": ("/dev/" if full else "") + dev["name"], "KNAME": dev["name"], "PATH": "/dev/" + dev["name"],
            "SERIAL": dev["serial"] or None, "SIZE": f'{dev["size_gb"]}G', "TYPE": "disk",
            "FSTYPE": f.get("type"), "UUID": f.get("uuid") or None, "LABEL": f.get("label") or None,
            "MOUNTPOINT": mp, "MOUNTPOINTS": [mp] if as_json else mp,
            "MODEL": "Amazon Elastic Block Store" if dev["serial"] else None,
        }
        rows.append({c: vals.get(c) for c in cols})
    if as_json:
        print(json.dumps({"blockdevices": [{k.lower(): v for k, v in r.items()} for r in rows]}, indent=3))
        return 0
    table = ([cols] if heading else []) + [["" if r[c] is None else str(r[c]) for c in cols] for r in rows]
    widths = [max(len(row[n]) for row in table) for n in range(len(cols))] if table else []
    for row in table:
        print(" ".join(row[n].ljust(widths[n]) for n in range(len(cols))).rstrip())
    return 0


def blkid(box: Box, args: list[str]) -> int:
    output, tags, dev_args, by_uuid = "full", [], [], None
    i = 0
    while i < len(args):
        a = args[i]
        if a == "-o":
            i += 1
            output = args[i]
        elif a == "-s":
            i += 1
            tags.append(args[i])
        elif a == "-U":
            i += 1
            by_uuid = args[i]
        elif not a.startswith("-"):
            dev_args.append(a)
        i += 1
    if by_uuid is not None:
        dev = box.find("UUID=" + by_uuid)
        if dev is None:
            return 2
        print("/dev/" + dev["name"])
        return 0
    found = False
    for dev in box.devices():
        if dev["root"] or (dev_args and "/dev/" + dev["name"] not in dev_args):
            continue
        f = box.fs(dev)
        if not f:
            continue
        found = True
        values = {"LABEL": f.get("label"), "UUID": f["uuid"], "BLOCK_SIZE": "4096", "TYPE": f["type"]}
        values = {k: v for k, v in values.items() if v and (not tags or k in tags)}
        if output == "value":
            for v in values.values():
                print(v)
        else:
            print("/dev/" + dev["name"] + ": " + " ".join(f'{k}="{v}"' for k, v in values.items()))
    return 0 if found else 2


def mkfs(box: Box, args: list[str]) -> int:
    force, label, target = False, None, None
    i = 0
    while i < len(args):
        a = args[i]
        if a == "-F":
            force = True
        elif a == "-L":
            i += 1
            label = args[i]
        elif not a.startswith("-"):
            target = a
        i += 1
    if target is None:
        raise Fail("Usage: mkfs.ext4 [-F] [-q] [-L volume-label] device")
    dev = box.find(target)
    if dev is None:
        raise Fail("mke2fs: No such file or directory while trying to determine filesystem size")
    if dev["root"] or box.mountpoint(dev):
        raise Fail(f"{target} contains a ext4 file system\n\t/dev/{dev['name']} is mounted; will not make a filesystem here!")
    old = box.fs(dev)
    if old and not force:
        labelled = f" labelled '{old['label']}'" if old.get("label") else ""
        raise Fail(f"mke2fs: {target} contains a {old['type']} file system{labelled}\nProceed anyway? (y,N) no")
    data = os.path.join(box.vdir(dev), "data")
    if os.path.isdir(data):
        shutil.rmtree(data)
    os.makedirs(data)
    doc = {"type": "ext4", "uuid": str(uuid.uuid4()), "label": label or ""}
    with open(os.path.join(box.vdir(dev), "fs.json"), "w") as f:
        json.dump(doc, f)
    if "-q" not in args:
        print(f"Creating filesystem with {dev['size_gb'] * 262144} 4k blocks\nFilesystem UUID: {doc['uuid']}\n"
              "Writing superblocks and filesystem accounting information: done")
    return 0


def fstab_entries(box: Box) -> list[tuple[str, str, list[str]]]:
    """(spec, mount point, options) of each line of the box's /etc/fstab."""
    entries = []
    with contextlib.suppress(OSError), open(box.fstab) as f:
        for line in f:
            fields = line.split("#", 1)[0].split()
            if len(fields) >= 2 and fields[1] not in ("/", "none", "swap"):
                entries.append((fields[0], fields[1], fields[3].split(",") if len(fields) > 3 else []))
    return entries


def mount_all(box: Box) -> int:
    """`mount -a`: every fstab line not mounted yet; a missing device with `nofail` is
    skipped quietly, as systemd does at boot."""
    status = 0
    for spec, target, options in fstab_entries(box):
        dev = box.find(spec)
        if dev is not None and box.mountpoint(dev):
            continue
        if dev is None and "nofail" in options:
            continue
        try:
            mount(box, [spec, target])
        except Fail as fail:
            print(fail, file=sys.stderr)
            status = fail.status
    return status


def boot(box: Box, args: list[str]) -> int:
    """`cloudsh-blk boot`, run by the box as it boots: nothing is mounted any more (the
    mount points of the last boot are empty directories again, as a real mount point is
    under its unmounted volume), then the fstab lines are mounted, as on Ubuntu at boot."""
    if not box.isolated:
        return 0
    points = [t for _, t, _ in fstab_entries(box)]
    for dev in box.devices():
        where = box.mountpoint(dev)
        if where and not dev["root"]:
            points.append(where)
            os.unlink(os.path.join(box.vdir(dev), "mount.json"))
    for where in points:  # also a volume's left while the box was stopped (detached since)
        if os.path.islink(where) and os.readlink(where).startswith(box.volumes + os.sep):
            os.unlink(where)
            os.makedirs(where, exist_ok=True)
    return mount_all(box)


def mount(box: Box, args: list[str]) -> int:
    if args == ["-a"]:
        return mount_all(box)
    rest = [a for a in args if not a.startswith("-")]
    if "-o" in args:
        opt = args[args.index("-o") + 1]
        rest = [a for a in rest if a != opt]
    if len(rest) != 2 or not (rest[0].startswith(("UUID=", "LABEL=")) or box.find(rest[0])):
        return real("mount", args)
    if not box.isolated:
        raise Fail("mount: volumes can be mounted only on a sandbox with bubblewrap isolation", 32)
    spec, target = rest[0], os.path.abspath(rest[1])
    dev = box.find(spec)
    if dev is None:
        raise Fail(f"mount: {target}: can't find {spec}.", 32)
    if not box.fs(dev):
        raise Fail(f"mount: {target}: wrong fs type, bad option, bad superblock on /dev/{dev['name']}, "
                   "missing codepage or helper program, or other error.", 32)
    if box.mountpoint(dev):
        raise Fail(f"mount: {target}: /dev/{dev['name']} already mounted on {box.mountpoint(dev)}.", 32)
    if not os.path.isdir(target) or os.path.islink(target):
        raise Fail(f"mount: {target}: mount point does not exist.", 32)
    try:
        os.rmdir(target)  # an empty directory; what was in it is hidden on a real mount too
    except OSError:
        raise Fail(f"mount: {target}: the sandbox mounts only on an empty directory.", 32) from None
    os.symlink(os.path.join(box.vdir(dev), "data"), target)
    with open(os.path.join(box.vdir(dev), "mount.json"), "w") as fh:
        json.dump({"dir": target}, fh)
    return 0


def busy(path: str) -> list[str]:
    """Pids of the processes whose working directory or an open file is under `path`."""
    path = os.path.realpath(path)
    pids = []
    for p in os.listdir("/proc"):
        if not p.isdigit() or int(p) == os.getpid():
            continue
        links = [f"/proc/{p}/cwd"]
        with contextlib.suppress(OSError):
            links += [f"/proc/{p}/fd/{n}" for n in os.listdir(f"/proc/{p}/fd")]
        for link in links:
            try:
                t = os.readlink(link)
            except OSError:
                continue
            if t == path or t.startswith(path + "/"):
                pids.append(p)
                break
    return pids


def umount(box: Box, args: list[str]) -> int:
    rest = [a for a in args if not a.startswith("-")]
    if len(rest) != 1:
        return real("umount", args)
    spec = rest[0]
    for dev in box.devices():
        mp = box.mountpoint(dev)
        if dev["root"] or not mp:
            continue
        if spec in (mp, "/dev/" + dev["name"]) or os.path.abspath(spec) == mp:
            if busy(os.path.join(box.vdir(dev), "data")):
                raise Fail(f"umount: {mp}: target is busy.", 32)
            if os.path.islink(mp):
                os.unlink(mp)
                os.mkdir(mp)
            os.unlink(os.path.join(box.vdir(dev), "mount.json"))
            return 0
    raise Fail(f"umount: {spec}: not mounted.", 32)


def sudo_argv(box: Box, args: list[str]) -> list[str]:
    """The command `sudo ARGS` runs (as the box's user: there is no root in a box)."""
    rest = list(args)
    while rest and rest[0].startswith("-"):
        flag = rest.pop(0)
        if flag in ("-u", "-g") and rest:
            rest.pop(0)
    if not rest:
        raise Fail("usage: sudo command")
    if not box.isolated:  # with bubblewrap, the box's fstab is bound over /etc/fstab
        rest = [box.fstab if a == "/etc/fstab" else a for a in rest]
    return rest


def sudo(box: Box, args: list[str]) -> int:
    argv = sudo_argv(box, args)
    os.environ["SUDO_USER"] = os.environ.get("USER", "ubuntu")  # as sudo sets it
    try:
        os.execvp(argv[0], argv)
    except OSError:
        raise Fail(f"sudo: {argv[0]}: command not found", 1) from None
    return 0  # not reached: exec replaced this process


COMMANDS: dict[str, Callable[[Box, list[str]], int]] = {
    "lsblk": lsblk, "blkid": blkid, "mkfs.ext4": mkfs, "mount": mount, "umount": umount, "sudo": sudo,
    "cloudsh-blk": boot,
}


def main(argv: list[str]) -> int:
    """`argv[0]` is the name the program was run as (one of `TOOLS`)."""
    tool = os.path.basename(argv[0])
    if tool not in COMMANDS or (tool == "cloudsh-blk" and argv[1:] != ["boot"]):
        print(f"cloudsh-blk: run me as one of {', '.join(TOOLS)}, or as `cloudsh-blk boot`", file=sys.stderr)
        return 2
    box = Box.load(os.path.join(os.path.dirname(os.path.abspath(__file__)), CONFIG))
    try:
        return COMMANDS[tool](box, argv[1:])
    except Fail as fail:
        print(fail, file=sys.stderr)
        return fail.status


if __name__ == "__main__":
    sys.exit(main(sys.argv))

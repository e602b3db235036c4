"""Sandbox storage: images, volumes and snapshots as directory trees, and block devices.

A WSGI layer (`StorageLayer`) sits between the EC2 fixes of `moto_app.py` and moto, and
keeps trees in step with the EC2 state moto serves:

    images/<ami-id>/root/        CreateImage copies the box's tree here; a box launched
                                 from the image starts with a copy (see sshd.Box.prepare)
    volumes/<vol-id>/data/       a volume's files, once `mkfs.ext4` made a filesystem
    volumes/<vol-id>/fs.json     {"type": "ext4", "uuid": ..., "label": ...}; absent = blank
    volumes/<vol-id>/mount.json  where it is mounted, while it is
    snapshots/<snap-id>/         CreateSnapshot copies the volume's tree; CreateVolume
                                 with that SnapshotId starts from a copy
    instances/<id>/blk/          devices.json (the box's block devices) and fstab

Inside a box, stand-ins for `lsblk`, `blkid`, `mkfs.ext4`, `mount`, `umount` and `sudo`
(installed with the other tool stand-ins, first on PATH) present attached volumes as
block devices: NVMe names with the volume id as serial on Nitro types, `xvdX` on Xen
types, as on EC2. `mount` makes the mount point a link to the volume's `data/`, which
bubblewrap shows inside the box under /dev/.cloudsh-volumes. `sudo` runs its command as
the box's user and points `/etc/fstab` at the box's own fstab.

The layer also fills gaps in moto's EC2: AttachVolume across AZs (`InvalidVolume.ZoneMismatch`),
to a terminated box or of an attached volume (`VolumeInUse`), DeleteVolume of an attached
volume, DescribeSnapshots with `OwnerIds=self`, a persistent spot request linked to each
spot instance (moto makes none), and Service Quotas from `quotas.py`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from cloudsh.sandbox import quotas, wsgi
from cloudsh.sandbox.wsgi import StartResponse, WsgiApp

log = logging.getLogger("cloudsh.sandbox.storage")

#: Names the block-device stand-ins answer to (one script, dispatched on argv[0]).
TOOLS = ("lsblk", "blkid", "mkfs.ext4", "mount", "umount", "sudo")
#: Where a bubblewrap box sees the volume trees and its device table.
BOX_VOLUMES = "/dev/.cloudsh-volumes"
BOX_BLK = "/dev/.cloudsh-blk"
ACCOUNT = "123456789012"


# -- trees ------------------------------------------------------------------------------


def copy_tree(src: Path, dst: Path) -> None:
    """Copy directories, regular files and symlinks; skip sockets and fifos (a running
    box may have them, and opening a fifo would block)."""
    dst.mkdir(parents=True, exist_ok=True)
    with os.scandir(src) as entries:
        for entry in entries:
            target = dst / entry.name
            try:
                if entry.is_symlink():
                    os.symlink(os.readlink(entry.path), target)
                elif entry.is_dir():
                    copy_tree(Path(entry.path), target)
                elif entry.is_file():
                    shutil.copy2(entry.path, target)
            except OSError as exc:
                log.warning("copy %s: %s", entry.path, exc)


def blk_dir(sandbox_dir: Path, instance_id: str) -> Path:
    return sandbox_dir / "instances" / instance_id / "blk"


def bwrap_binds(sandbox_dir: Path, instance_id: str) -> list[str]:
    """bubblewrap arguments that show volumes and the box's devices inside the box, under
    the box's own /dev (a tmpfs, so bubblewrap can make the mount points there)."""
    volumes = sandbox_dir / "volumes"
    blk = blk_dir(sandbox_dir, instance_id)
    volumes.mkdir(parents=True, exist_ok=True)
    blk.mkdir(parents=True, exist_ok=True)
    (blk / "fstab").touch()
    binds = ["--bind", str(volumes), BOX_VOLUMES, "--ro-bind", str(blk), BOX_BLK]
    if Path("/etc/fstab").is_file():
        binds += ["--bind", str(blk / "fstab"), "/etc/fstab"]
    return binds


def install_tools(tools: Path, sandbox_dir: Path, instance_id: str, *, isolated: bool) -> None:
    """Write the block-device stand-ins into the box's tool dir (first on its PATH)."""
    tools.mkdir(parents=True, exist_ok=True)
    blk = blk_dir(sandbox_dir, instance_id)
    blk.mkdir(parents=True, exist_ok=True)
    (blk / "fstab").touch()
    script = tools / "cloudsh-blk"
    script.write_text(
        _TOOL_SCRIPT.replace("@VOLUMES@", repr(BOX_VOLUMES if isolated else str(sandbox_dir / "volumes")))
        .replace("@BLK@", repr(BOX_BLK if isolated else str(blk)))
        .replace("@ISOLATED@", repr(isolated))
    )
    script.chmod(0o755)
    for name in TOOLS:
        link = tools / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to("cloudsh-blk")


def write_devices(sandbox_dir: Path, inst: Any) -> None:
    """The box's block devices (root first) as the stand-ins see them, from moto's state."""
    from moto.ec2.models.instance_types import INSTANCE_TYPES

    nitro = (INSTANCE_TYPES.get(str(inst.instance_type)) or {}).get("Hypervisor") == "nitro"
    root_name = getattr(inst, "root_device_name", "/dev/sda1")
    mappings = sorted(
        inst.block_device_mapping.items(), key=lambda kv: (kv[0] != root_name, kv[0])
    )
    devices = []
    for n, (path, bdt) in enumerate(mappings):
        if nitro:
            name = f"nvme{n}n1"
        else:
            name = "xvda" if path == root_name else "xvd" + path.rstrip("0123456789")[-1]
        devices.append(
            {
                "name": name,
                "volume_id": bdt.volume_id,
                "size_gb": int(bdt.size or 0),
                "root": path == root_name,
                "serial": bdt.volume_id.replace("-", "") if nitro else "",
            }
        )
    blk = blk_dir(sandbox_dir, inst.id)
    blk.mkdir(parents=True, exist_ok=True)
    tmp = blk / ".devices.json.tmp"
    tmp.write_text(json.dumps({"devices": devices}, indent=1))
    tmp.replace(blk / "devices.json")


# -- the WSGI layer ----------------------------------------------------------------------


class StorageLayer:
    """Trees for images/volumes/snapshots, EC2 checks moto skips, spot requests, quotas.

    `on_lifecycle(action, ids)` is told of the reboot CreateImage does without NoReboot.
    """

    def __init__(
        self,
        app: WsgiApp,
        sandbox_dir: Path,
        ec2_backend: Callable[[], Any],
        on_lifecycle: Callable[[str, list[str]], None] | None = None,
    ) -> None:
        self.app = app
        self.dir = sandbox_dir
        self.ec2_backend = ec2_backend
        self.on_lifecycle = on_lifecycle
        self.quotas = quotas.table()
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        if target.startswith(quotas.TARGET_PREFIX):
            return self._quota(environ, start_response, target)
        params = wsgi.params(environ)
        action = params.get("Action", "")
        try:
            self._check(action, params)
        except _Ec2Error as err:
            return wsgi.respond(start_response, "400 Bad Request", wsgi.error_xml(err.code, err.message))
        if action == "DescribeSnapshots" and "self" in wsgi.numbered(params, "Owner"):
            wsgi.set_body(environ, _only_own_snapshots(params))
            return self._own_snapshots(environ, start_response)
        if action not in _AFTER:
            return self.app(environ, start_response)
        status, headers, body = wsgi.call(self.app, environ)
        if status.startswith("200"):
            try:
                with self._lock:
                    getattr(self, _AFTER[action])(params, body.decode("utf-8", "replace"))
            except Exception:  # the EC2 call succeeded; a tree that failed to follow is logged
                log.exception("%s: could not update the sandbox trees", action)
        start_response(status, headers)
        return [body]

    def _own_snapshots(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        """moto files the snapshots behind public images under this account: drop them."""
        status, headers, body = wsgi.call(self.app, environ)
        if status.startswith("200"):
            foreign = {
                ami.ebs_snapshot.id for ami in list(self.ec2_backend().amis.values())
                if ami.owner_id != ACCOUNT and getattr(ami, "ebs_snapshot", None) is not None
            }
            body = _drop_items(body, "snapshotSet", "snapshotId", foreign)
            headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
            headers.append(("Content-Length", str(len(body))))
        start_response(status, headers)
        return [body]

    # -- checks EC2 makes and moto does not ------------------------------------------------

    def _check(self, action: str, params: dict[str, str]) -> None:
        backend = self.ec2_backend()
        if action == "AttachVolume":
            vol = backend.volumes.get(params.get("VolumeId", ""))
            inst = _instance(backend, params.get("InstanceId", ""))
            if vol is None or inst is None:
                return
            if vol.attachment is not None:
                raise _Ec2Error("VolumeInUse", f"{vol.id} is already attached to an instance")
            if str(inst.state) in ("terminated", "shutting-down"):
                raise _Ec2Error("IncorrectState", f"Instance '{inst.id}' is not 'running' or 'stopped'.")
            if vol.zone is not None and vol.zone.name != inst.placement.zone:
                raise _Ec2Error(
                    "InvalidVolume.ZoneMismatch",
                    f"The volume '{vol.id}' is not in the same availability zone as instance '{inst.id}'",
                )
        elif action == "DeleteVolume":
            vol = backend.volumes.get(params.get("VolumeId", ""))
            if vol is not None and vol.attachment is not None:
                raise _Ec2Error("VolumeInUse", f"Volume {vol.id} is currently attached to {vol.attachment.instance.id}")
        elif action == "CreateImage":
            inst = _instance(backend, params.get("InstanceId", ""))
            if inst is not None and str(inst.state) in ("terminated", "shutting-down", "pending"):
                raise _Ec2Error("IncorrectInstanceState", f"The instance '{inst.id}' is not in a valid state for this operation.")

    # -- after a successful call ------------------------------------------------------------

    def _after_create_image(self, params: dict[str, str], body: str) -> None:
        ami, iid = _tag(body, "imageId"), params.get("InstanceId", "")
        src = self.dir / "instances" / iid / "root"
        if ami and src.is_dir():
            copy_tree(src, self.dir / "images" / ami / "root")
        if params.get("NoReboot", "false").lower() != "true" and self.on_lifecycle is not None:
            self.on_lifecycle("RebootInstances", [iid])

    def _after_deregister_image(self, params: dict[str, str], body: str) -> None:
        shutil.rmtree(self.dir / "images" / params.get("ImageId", "_"), ignore_errors=True)

    def _after_create_volume(self, params: dict[str, str], body: str) -> None:
        vol = _tag(body, "volumeId")
        if not vol:
            return
        snap = self.dir / "snapshots" / params.get("SnapshotId", "_")
        if params.get("SnapshotId") and snap.is_dir():
            copy_tree(snap, self.dir / "volumes" / vol)
            (self.dir / "volumes" / vol / "mount.json").unlink(missing_ok=True)
        else:
            (self.dir / "volumes" / vol).mkdir(parents=True, exist_ok=True)

    def _after_delete_volume(self, params: dict[str, str], body: str) -> None:
        shutil.rmtree(self.dir / "volumes" / params.get("VolumeId", "_"), ignore_errors=True)

    def _after_create_snapshot(self, params: dict[str, str], body: str) -> None:
        snap, vol = _tag(body, "snapshotId"), params.get("VolumeId", "")
        src = self.dir / "volumes" / vol
        if snap and src.is_dir():
            copy_tree(src, self.dir / "snapshots" / snap)
            (self.dir / "snapshots" / snap / "mount.json").unlink(missing_ok=True)

    def _after_delete_snapshot(self, params: dict[str, str], body: str) -> None:
        shutil.rmtree(self.dir / "snapshots" / params.get("SnapshotId", "_"), ignore_errors=True)

    def _after_attachment(self, params: dict[str, str], body: str) -> None:
        backend = self.ec2_backend()
        iid = params.get("InstanceId") or _tag(body, "instanceId")
        inst = _instance(backend, iid)
        if inst is not None:
            write_devices(self.dir, inst)
        if params.get("Action") == "DetachVolume":
            (self.dir / "volumes" / params.get("VolumeId", "_") / "mount.json").unlink(missing_ok=True)

    def _after_run_instances(self, params: dict[str, str], body: str) -> None:
        if params.get("InstanceMarketOptions.MarketType") != "spot":
            return
        backend = self.ec2_backend()
        kind = params.get("InstanceMarketOptions.SpotOptions.SpotInstanceType", "one-time")
        behaviour = params.get("InstanceMarketOptions.SpotOptions.InstanceInterruptionBehavior", "terminate")
        for iid in re.findall(r"<instanceId>([^<]+)</instanceId>", body):
            inst = _instance(backend, iid)
            if inst is not None and not getattr(inst, "spot_instance_request_id", None):
                link_spot_request(backend, inst, kind, behaviour)

    # -- Service Quotas ------------------------------------------------------------------

    def _quota(self, environ: dict[str, Any], start_response: StartResponse, target: str) -> Iterable[bytes]:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        status, doc = quotas.answer(target, body, self.quotas)
        return wsgi.respond(start_response, status, json.dumps(doc), "application/x-amz-json-1.1")


_AFTER = {
    "CreateImage": "_after_create_image",
    "DeregisterImage": "_after_deregister_image",
    "CreateVolume": "_after_create_volume",
    "DeleteVolume": "_after_delete_volume",
    "CreateSnapshot": "_after_create_snapshot",
    "DeleteSnapshot": "_after_delete_snapshot",
    "AttachVolume": "_after_attachment",
    "DetachVolume": "_after_attachment",
    "RunInstances": "_after_run_instances",
}


def link_spot_request(backend: Any, inst: Any, kind: str, behaviour: str) -> str:
    """Make the spot request EC2 would have made for this spot instance, and link them."""
    from moto.ec2.models.spot_requests import SpotInstanceRequest
    from moto.ec2.utils import random_spot_request_id

    class _Linked(SpotInstanceRequest):
        # moto's request launches its own instance; this one adopts an existing one.
        def launch_instance(self) -> Any:
            return inst

    request_id = random_spot_request_id()
    request = _Linked(
        backend, request_id, "", inst.image_id, kind, None, None, None, None,
        inst.key_name, [], None, inst.instance_type, inst.placement.zone, None, None,
        False, getattr(inst, "subnet_id", None) or "", {}, None, behaviour,
    )
    backend.spot_instance_requests[request_id] = request
    inst.spot_instance_request_id = request_id
    return request_id


class _Ec2Error(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _instance(backend: Any, instance_id: str) -> Any | None:
    for inst in backend.all_instances():
        if inst.id == instance_id:
            return inst
    return None


def _tag(xml: str, name: str) -> str:
    found = re.search(rf"<{name}>([^<]+)</{name}>", xml)
    return found.group(1) if found else ""


def _only_own_snapshots(params: dict[str, str]) -> bytes:
    """moto ignores OwnerIds and lists the snapshots behind every public image: filter."""
    query = {k: v for k, v in params.items() if not k.startswith("Owner.")}
    n = 1
    while f"Filter.{n}.Name" in query:
        n += 1
    query[f"Filter.{n}.Name"] = "owner-id"
    query[f"Filter.{n}.Value.1"] = ACCOUNT
    return urlencode(query).encode()


def _drop_items(xml: bytes, set_tag: str, id_tag: str, ids: set[str]) -> bytes:
    from xml.etree import ElementTree

    root = ElementTree.fromstring(xml)
    ns = root.tag[: root.tag.index("}") + 1] if root.tag.startswith("{") else ""
    if ns:
        ElementTree.register_namespace("", ns[1:-1])
    for group in root.iter(f"{ns}{set_tag}"):
        for item in list(group):
            if item.findtext(f"{ns}{id_tag}") in ids:
                group.remove(item)
    return bytes(ElementTree.tostring(root, encoding="utf-8", xml_declaration=True))


# -- the stand-ins --------------------------------------------------------------------------

_TOOL_SCRIPT = r'''#!/usr/bin/env python3
# cloudsh sandbox stand-in for lsblk, blkid, mkfs.ext4, mount, umount and sudo: the box's
# EBS volumes are directory trees (see cloudsh/sandbox/storage.py); no real block device.
import json, os, sys, uuid
VOLUMES, BLK, ISOLATED = @VOLUMES@, @BLK@, @ISOLATED@
FSTAB = os.path.join(BLK, "fstab")
tool = os.path.basename(sys.argv[0])
args = sys.argv[1:]

def die(msg, status=1):
    print(msg, file=sys.stderr)
    sys.exit(status)

def devices():
    try:
        with open(os.path.join(BLK, "devices.json")) as f:
            return json.load(f)["devices"]
    except (OSError, ValueError, KeyError):
        return []

def vdir(dev):
    return os.path.join(VOLUMES, dev["volume_id"])

def fs(dev):
    if dev["root"]:
        return {"type": "ext4", "uuid": "", "label": "cloudimg-rootfs"}
    try:
        with open(os.path.join(vdir(dev), "fs.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None

def mountpoint(dev):
    if dev["root"]:
        return "/"
    try:
        with open(os.path.join(vdir(dev), "mount.json")) as f:
            return json.load(f)["dir"]
    except (OSError, ValueError, KeyError):
        return None

def find(spec):
    for dev in devices():
        f = fs(dev)
        if spec in ("/dev/" + dev["name"], dev["name"]):
            return dev
        if f and f.get("uuid") and spec in ("UUID=" + f["uuid"], "/dev/disk/by-uuid/" + f["uuid"]):
            return dev
        if f and f.get("label") and spec == "LABEL=" + f["label"] and not dev["root"]:
            return dev
    return None

def real(name):
    for d in ("/usr/bin", "/bin", "/usr/sbin", "/sbin"):
        if os.path.exists(os.path.join(d, name)):
            os.execv(os.path.join(d, name), [name] + args)
    die(f"{name}: command not found", 127)

def lsblk():
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
    for dev in devices():
        f = fs(dev) or {}
        mp = mountpoint(dev)
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
        print(" ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())
    return 0

def blkid():
    output, tags, dev_args, by_uuid = "full", [], [], None
    i = 0
    while i < len(args):
        a = args[i]
        if a == "-o":
            i += 1; output = args[i]
        elif a == "-s":
            i += 1; tags.append(args[i])
        elif a == "-U":
            i += 1; by_uuid = args[i]
        elif not a.startswith("-"):
            dev_args.append(a)
        i += 1
    if by_uuid is not None:
        dev = find("UUID=" + by_uuid)
        if dev is None:
            return 2
        print("/dev/" + dev["name"])
        return 0
    found = False
    for dev in devices():
        if dev["root"] or (dev_args and "/dev/" + dev["name"] not in dev_args):
            continue
        f = fs(dev)
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

def mkfs():
    force, label, target = False, None, None
    i = 0
    while i < len(args):
        a = args[i]
        if a == "-F":
            force = True
        elif a == "-L":
            i += 1; label = args[i]
        elif not a.startswith("-"):
            target = a
        i += 1
    if target is None:
        die("Usage: mkfs.ext4 [-F] [-q] [-L volume-label] device")
    dev = find(target)
    if dev is None:
        die(f"mke2fs: No such file or directory while trying to determine filesystem size")
    if dev["root"] or mountpoint(dev):
        die(f"{target} contains a ext4 file system\n\t/dev/{dev['name']} is mounted; will not make a filesystem here!")
    old = fs(dev)
    if old and not force:
        die(f"mke2fs: {target} contains a {old['type']} file system" + (f" labelled '{old['label']}'" if old.get("label") else "") + "\nProceed anyway? (y,N) no")
    data = os.path.join(vdir(dev), "data")
    if os.path.isdir(data):
        import shutil
        shutil.rmtree(data)
    os.makedirs(data)
    doc = {"type": "ext4", "uuid": str(uuid.uuid4()), "label": label or ""}
    with open(os.path.join(vdir(dev), "fs.json"), "w") as f:
        json.dump(doc, f)
    if "-q" not in args:
        print(f"Creating filesystem with {dev['size_gb'] * 262144} 4k blocks\nFilesystem UUID: {doc['uuid']}\nWriting superblocks and filesystem accounting information: done")
    return 0

def mount():
    rest = [a for a in args if not a.startswith("-")]
    if "-o" in args:
        opt = args[args.index("-o") + 1]
        rest = [a for a in rest if a != opt]
    if len(rest) != 2 or not (rest[0].startswith(("UUID=", "LABEL=")) or find(rest[0])):
        real("mount")
    if not ISOLATED:
        die("mount: volumes can be mounted only on a sandbox with bubblewrap isolation", 32)
    spec, target = rest
    target = os.path.abspath(target)
    dev = find(spec)
    if dev is None:
        die(f"mount: {target}: can't find {spec}.", 32)
    f = fs(dev)
    if not f:
        die(f"mount: {target}: wrong fs type, bad option, bad superblock on /dev/{dev['name']}, missing codepage or helper program, or other error.", 32)
    if mountpoint(dev):
        die(f"mount: {target}: /dev/{dev['name']} already mounted on {mountpoint(dev)}.", 32)
    if not os.path.isdir(target) or os.path.islink(target):
        die(f"mount: {target}: mount point does not exist.", 32)
    try:
        os.rmdir(target)  # an empty directory; what was in it is hidden on a real mount too
    except OSError:
        die(f"mount: {target}: the sandbox mounts only on an empty directory.", 32)
    os.symlink(os.path.join(vdir(dev), "data"), target)
    with open(os.path.join(vdir(dev), "mount.json"), "w") as fh:
        json.dump({"dir": target}, fh)
    return 0

def busy(path):
    path = os.path.realpath(path)
    pids = []
    for p in os.listdir("/proc"):
        if not p.isdigit() or int(p) == os.getpid():
            continue
        links = [f"/proc/{p}/cwd"]
        try:
            links += [f"/proc/{p}/fd/{n}" for n in os.listdir(f"/proc/{p}/fd")]
        except OSError:
            pass
        for link in links:
            try:
                t = os.readlink(link)
            except OSError:
                continue
            if t == path or t.startswith(path + "/"):
                pids.append(p)
                break
    return pids

def umount():
    rest = [a for a in args if not a.startswith("-")]
    if len(rest) != 1:
        real("umount")
    spec = rest[0]
    for dev in devices():
        mp = mountpoint(dev)
        if dev["root"] or not mp:
            continue
        if spec in (mp, "/dev/" + dev["name"]) or os.path.abspath(spec) == mp:
            if busy(os.path.join(vdir(dev), "data")):
                die(f"umount: {mp}: target is busy.", 32)
            if os.path.islink(mp):
                os.unlink(mp)
                os.mkdir(mp)
            os.unlink(os.path.join(vdir(dev), "mount.json"))
            return 0
    die(f"umount: {spec}: not mounted.", 32)

def sudo():
    rest = list(args)
    while rest and rest[0].startswith("-"):
        flag = rest.pop(0)
        if flag in ("-u", "-g") and rest:
            rest.pop(0)
    if not rest:
        die("usage: sudo command")
    if not ISOLATED:  # with bubblewrap, the box's fstab is bound over /etc/fstab
        rest = [FSTAB if a == "/etc/fstab" else a for a in rest]
    try:
        os.execvp(rest[0], rest)
    except OSError as exc:
        die(f"sudo: {rest[0]}: command not found", 1)

sys.exit({"lsblk": lsblk, "blkid": blkid, "mkfs.ext4": mkfs, "mount": mount, "umount": umount, "sudo": sudo}[tool]())
'''

"""Sandbox storage: images, volumes and snapshots as directory trees.

A WSGI layer (`StorageLayer`) sits between the EC2 fixes of `moto_app.py` and moto, and
keeps trees in step with the EC2 state moto serves:

    images/<ami-id>/root/        CreateImage copies the box's tree here; a box launched
                                 from the image starts with a copy (see sshd.Box.prepare)
    volumes/<vol-id>/data/       a volume's files, once `mkfs.ext4` made a filesystem
    volumes/<vol-id>/fs.json     {"type": "ext4", "uuid": ..., "label": ...}; absent = blank
    volumes/<vol-id>/mount.json  where it is mounted, while it is
    snapshots/<snap-id>/         CreateSnapshot copies the volume's tree; CreateVolume
                                 with that SnapshotId starts from a copy

Attached volumes appear inside a box as block devices through the stand-ins of
`devices.py`, whose device table the layer rewrites on every attach and detach.

The layer also fills gaps in moto's EC2: AttachVolume across AZs (`InvalidVolume.ZoneMismatch`),
to a terminated box or of an attached volume (`VolumeInUse`), DeleteVolume of an attached
volume, DescribeSnapshots with `OwnerIds=self`, a persistent spot request linked to each
spot instance (moto makes none), and Service Quotas from `quotas.py`. Images carry the root
device and snapshot size EC2 gives them, and launches get the root mapping EC2 derives
from the image (`images.py`).
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

from cloudsh.sandbox import images, quotas, regions, wsgi
from cloudsh.sandbox.devices import BOX_VOLUMES, write_devices
from cloudsh.sandbox.wsgi import Ec2Error, StartResponse, WsgiApp

log = logging.getLogger("cloudsh.sandbox.storage")

ACCOUNT = "123456789012"


# -- trees ------------------------------------------------------------------------------


def copy_tree(src: Path, dst: Path, *, unlink_under: tuple[Path, ...] = ()) -> None:
    """Copy directories, regular files and symlinks; skip sockets and fifos (a running
    box may have them, and opening a fifo would block). A symlink into one of
    `unlink_under` (a mounted volume, in a box's tree) becomes an empty directory: a copy
    never links to live data."""
    dst.mkdir(parents=True, exist_ok=True)
    with os.scandir(src) as entries:
        for entry in entries:
            target = dst / entry.name
            try:
                if entry.is_symlink():
                    link = os.readlink(entry.path)
                    if any(Path(link).is_relative_to(p) for p in unlink_under):
                        target.mkdir()
                    else:
                        os.symlink(link, target)
                elif entry.is_dir():
                    copy_tree(Path(entry.path), target, unlink_under=unlink_under)
                elif entry.is_file():
                    shutil.copy2(entry.path, target)
            except OSError as exc:
                log.warning("copy %s: %s", entry.path, exc)


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
        #: Boxes whose disk is being copied into an image: they do not boot until it is done.
        self.freezing: set[str] = set()

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        if target.startswith(quotas.TARGET_PREFIX):
            return self._quota(environ, start_response, target)
        params = wsgi.params(environ)
        action = params.get("Action", "")
        try:
            self._check(action, params)
            if action == "CreateImage":
                self._before_create_image(params)
            if action == "RunInstances":
                merged = images.run_instances_params(self.ec2_backend(), params)
                if merged is not None:
                    wsgi.set_body(environ, urlencode(merged).encode())
        except Ec2Error as err:
            return wsgi.respond(start_response, "400 Bad Request", wsgi.error_xml(err.code, err.message))
        if action == "DescribeSnapshots" and "self" in wsgi.numbered(params, "Owner"):
            wsgi.set_body(environ, _only_own_snapshots(params))
            return self._rewritten(environ, start_response, self._drop_foreign_snapshots)
        if action == "DescribeImages":
            return self._rewritten(
                environ, start_response, lambda body: images.describe_images_body(self.ec2_backend(), body)
            )
        if action not in _AFTER:
            return self.app(environ, start_response)
        status, headers, body = wsgi.call(self.app, environ)
        if action == "CreateImage" and not status.startswith("200"):
            self.freezing.discard(params.get("InstanceId", ""))  # nothing to copy: boot again
        if status.startswith("200"):
            try:
                with self._lock:
                    getattr(self, _AFTER[action])(params, body.decode("utf-8", "replace"))
            except Exception:  # the EC2 call succeeded; a tree that failed to follow is logged
                log.exception("%s: could not update the sandbox trees", action)
        start_response(status, headers)
        return [body]

    def _drop_foreign_snapshots(self, body: bytes) -> bytes:
        """moto files the snapshots behind public images under this account: drop them."""
        foreign = {
            ami.ebs_snapshot.id for ami in list(self.ec2_backend().amis.values())
            if ami.owner_id != ACCOUNT and getattr(ami, "ebs_snapshot", None) is not None
        }
        return _drop_items(body, "snapshotSet", "snapshotId", foreign)

    def _rewritten(
        self, environ: dict[str, Any], start_response: StartResponse, rewrite: Callable[[bytes], bytes]
    ) -> Iterable[bytes]:
        """moto's answer, its body rewritten when it succeeded."""
        status, headers, body = wsgi.call(self.app, environ)
        if status.startswith("200"):
            body = rewrite(body)
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
                raise Ec2Error("VolumeInUse", f"{vol.id} is already attached to an instance")
            # "The specified device ID cannot be in use by another device" (EC2 API
            # reference, AttachVolume); two attaches to one box at once can pick the same name.
            device = params.get("Device", "")
            if any(v.attachment is not None and v.attachment.instance.id == inst.id and v.attachment.device == device
                   for v in backend.volumes.values()):
                raise Ec2Error("InvalidParameterValue",
                               f"Invalid value '{device}' for unixDevice. Attachment point {device} is already in use")
            if str(inst.state) in ("terminated", "shutting-down"):
                raise Ec2Error("IncorrectState", f"Instance '{inst.id}' is not 'running' or 'stopped'.")
            if vol.zone is not None and vol.zone.name != inst.placement.zone:
                raise Ec2Error(
                    "InvalidVolume.ZoneMismatch",
                    f"The volume '{vol.id}' is not in the same availability zone as instance '{inst.id}'",
                )
        elif action == "DeleteVolume":
            vol = backend.volumes.get(params.get("VolumeId", ""))
            if vol is not None and vol.attachment is not None:
                raise Ec2Error("VolumeInUse", f"Volume {vol.id} is currently attached to {vol.attachment.instance.id}")
        elif action == "CreateImage":
            inst = _instance(backend, params.get("InstanceId", ""))
            if inst is not None and str(inst.state) in ("terminated", "shutting-down", "pending"):
                raise Ec2Error("IncorrectInstanceState", f"The instance '{inst.id}' is not in a valid state for this operation.")
            # Image names are unique per account and region ("Create an Amazon EBS-backed
            # AMI": "InvalidAMIName.Duplicate", "AMI name NAME is already in use by AMI ami-…").
            name = params.get("Name", "")
            same = next((a for a in list(backend.amis.values()) if a.owner_id == ACCOUNT and a.name == name), None)
            if same is not None:
                raise Ec2Error("InvalidAMIName.Duplicate", f"AMI name {name} is already in use by AMI {same.id}")

    # -- after a successful call ------------------------------------------------------------

    def _before_create_image(self, params: dict[str, str]) -> None:
        """Without NoReboot EC2 shuts the box down cleanly before it copies the disk ("Create
        an Amazon EBS-backed AMI": "Amazon EC2 powers down the instance before creating the
        AMI"): its programs stop, and the box stays down until the copy has its data."""
        iid = params.get("InstanceId", "")
        if params.get("NoReboot", "false").lower() != "true" and _instance(self.ec2_backend(), iid) is not None:
            self.freezing.add(iid)
            if self.on_lifecycle is not None:
                self.on_lifecycle("RebootInstances", [iid])

    def _after_create_image(self, params: dict[str, str], body: str) -> None:
        """The image answers at once, `pending` while its disk is copied in the background
        (EC2: minutes), then `available`; a client that retries meanwhile finds the name taken."""
        backend = self.ec2_backend()
        ami_id, iid = _tag(body, "imageId"), params.get("InstanceId", "")
        images.after_create_image(backend, ami_id, iid)
        ami = backend.amis.get(ami_id)
        if ami is not None:
            ami.state = "pending"

        def copy() -> None:
            try:
                src = self.dir / "instances" / iid / "root"
                if ami_id and src.is_dir():
                    # A mount links to the volume as the box sees it, or as this machine does.
                    volumes = (self.dir / "volumes", Path(BOX_VOLUMES))
                    copy_tree(src, self.dir / "images" / ami_id / "root", unlink_under=volumes)
            except Exception:
                log.exception("CreateImage %s: could not copy the disk", ami_id)
            finally:
                self.freezing.discard(iid)
                if ami is not None:
                    ami.cloudsh_copied = True
                    if not getattr(ami, "cloudsh_held", False):  # timing.py's pending time is over
                        ami.state = "available"

        threading.Thread(target=copy, name=f"image-{ami_id}", daemon=True).start()

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
        status, doc = quotas.answer(target, body, self.quotas, regions.current())
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
    from moto.ec2.utils import random_spot_request_id

    request_id = random_spot_request_id()
    cls = _linked_spot_request()
    request = cls.__new__(cls)
    request.adopted = inst
    request.__init__(
        backend, request_id, "", inst.image_id, kind, None, None, None, None,
        inst.key_name, [], None, inst.instance_type, inst.placement.zone, None, None,
        False, getattr(inst, "subnet_id", None) or "", {}, None, behaviour,
    )
    backend.spot_instance_requests[request_id] = request
    inst.spot_instance_request_id = request_id
    return request_id


_LINKED: list[Any] = []


def _linked_spot_request() -> Any:
    """moto's spot request, adopting an existing instance instead of launching its own.
    Made once, on first use (moto loads late), and found by pickle as
    `storage.LinkedSpotRequest` (see `__getattr__`), so the cloud still saves (persist.py)."""
    if not _LINKED:
        from moto.ec2.models.spot_requests import SpotInstanceRequest

        def launch_instance(self: Any) -> Any:
            return self.adopted

        _LINKED.append(type("LinkedSpotRequest", (SpotInstanceRequest,), {
            "__module__": __name__, "launch_instance": launch_instance,
        }))
    return _LINKED[0]


def __getattr__(name: str) -> Any:
    if name == "LinkedSpotRequest":
        return _linked_spot_request()
    raise AttributeError(name)


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

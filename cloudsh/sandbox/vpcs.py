"""An account without a default VPC (`CLOUDSH_SANDBOX_NO_DEFAULT_VPC=1`), common in organisations.

"Default VPCs" (https://docs.aws.amazon.com/vpc/latest/userguide/default-vpc.html): an
account whose default VPC was deleted (or never made) must name a subnet to launch an
instance and a VPC to create a security group; without one EC2 answers
`VPCIdNotSpecified`, "No default VPC for this user" (a client error).

`remove_default_vpc` deletes moto's default VPC and its default subnets and puts two
subnets of a non-default VPC in their place (one that gives instances public addresses,
one that does not, as organisations often have), so `--subnet` has something to use.
`NoDefaultVpcLayer` refuses what moto would still quietly allow. `NicGroupsLayer` (always
on) gives an instance launched through a network interface that interface's groups.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

from cloudsh.sandbox import wsgi
from cloudsh.sandbox.wsgi import StartResponse, WsgiApp

_NO_DEFAULT = "No default VPC for this user. GroupName is only supported for EC2-Classic and default VPC."


def remove_default_vpc(backend: Any) -> None:
    """Delete the default VPC; make `vpc-…` 10.0.0.0/16 with a public and a private subnet."""
    for vpc in [v for v in backend.vpcs.values() if v.is_default]:
        for subnet in backend.describe_subnets(filters={"vpc-id": vpc.id}):
            backend.delete_subnet(subnet.id)
        for igw in backend.describe_internet_gateways(filters={"attachment.vpc-id": vpc.id}):
            backend.detach_internet_gateway(igw.id, vpc.id)
            backend.delete_internet_gateway(igw.id)
        backend.delete_vpc(vpc.id)
    zones = [z.name for z in backend.describe_availability_zones()]
    vpc = backend.create_vpc("10.0.0.0/16")
    vpc.add_tag("Name", "work")
    igw = backend.create_internet_gateway()
    backend.attach_internet_gateway(igw.id, vpc.id)
    for n, (name, public) in enumerate((("work-public", True), ("work-private", False)), 1):
        subnet = backend.create_subnet(vpc.id, f"10.0.{n}.0/24", availability_zone=zones[n])
        # moto makes the first subnet of an AZ its default, with public addresses: not here.
        subnet.default_for_az = False
        backend.modify_subnet_attribute(subnet.id, "map_public_ip_on_launch", public)
        subnet.add_tag("Name", name)


class NoDefaultVpcLayer:
    """`CreateSecurityGroup` without `VpcId` and `RunInstances` without a subnet fail as on EC2."""

    def __init__(self, app: WsgiApp) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        params = wsgi.params(environ)
        action = params.get("Action", "")
        refused = (
            action == "CreateSecurityGroup" and not params.get("VpcId")
            or action == "RunInstances" and not any(
                k == "SubnetId" or k.startswith("NetworkInterface.") and k.endswith(".SubnetId") for k in params
            )
        )
        if refused:
            return wsgi.respond(start_response, "400 Bad Request", wsgi.error_xml("VPCIdNotSpecified", _NO_DEFAULT))
        return self.app(environ, start_response)


class NicGroupsLayer:
    """An instance launched with a network interface has that interface's security groups
    (EC2's `DescribeInstances` lists them); moto lists none. Sets them after `RunInstances`."""

    def __init__(self, app: WsgiApp, backend: Callable[[], Any]) -> None:
        self.app = app
        self.backend = backend

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        params = wsgi.params(environ)
        groups = wsgi.numbered(params, "NetworkInterface.1.SecurityGroupId")
        if params.get("Action") != "RunInstances" or not groups:
            return self.app(environ, start_response)
        status, headers, body = wsgi.call(self.app, environ)
        if status.startswith("200"):
            made = set(re.findall(r"<instanceId>([^<]+)</instanceId>", body.decode()))
            backend = self.backend()
            for inst in backend.all_instances():
                if inst.id in made and not inst.security_groups:
                    inst.security_groups = [backend.get_security_group_from_id(g) for g in groups]
        start_response(status, headers)
        return [body]


def wrap(app: WsgiApp, no_default_vpc: bool, backend: Callable[[], Any]) -> WsgiApp:
    """The app as the knob asks: without a default VPC, `remove_default_vpc` has run too."""
    app = NicGroupsLayer(app, backend)
    if not no_default_vpc:
        return app
    remove_default_vpc(backend())
    return NoDefaultVpcLayer(app)

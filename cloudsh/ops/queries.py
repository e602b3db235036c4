"""Read-only questions about the cloud, answered as data: the instance listing, the types
and prices on offer, an OpenSSH config for the running boxes.

The command language formats these answers, the Python API returns them and the app
fills its panes with them, so no front end scrapes another's printed output.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloudsh.errors import CloudshError
from cloudsh.models import Instance, InstanceType, Price, Prices
from cloudsh.ops.owners import own
from cloudsh.ops.reach import allow_this_machine, remember
from cloudsh.ops.records import instance_record
from cloudsh.ops.whereabouts import Addresses

if TYPE_CHECKING:
    # boto3 underneath: for types only, so the app paints before it loads
    from cloudsh.services.backend import Backend


#: Families shown by `prices` without a family filter: the usual CPU and GPU workhorses.
COMMON_FAMILIES = ("t3", "m5", "m6i", "c5", "g4dn", "g5", "g6", "p3", "p4d", "p5")


async def listing(
    backend: Backend, *, include_terminated: bool = False, instances: Sequence[Instance] | None = None
) -> list[dict[str, Any]]:
    """`ls` records: instances (listed here unless given) joined with type facts and
    prices (3 API calls, none per box)."""
    insts = instances if instances is not None else await backend.ec2.list_instances(
        include_terminated=include_terminated
    )
    names = sorted({i.type for i in insts})
    spot = sorted({i.type for i in insts if i.market == "spot"})
    types, prices = await asyncio.gather(
        backend.ec2.instance_types(names), backend.pricing.prices(names, strict=False, spot_for=spot)
    )

    def records() -> list[dict[str, Any]]:
        ports = backend.hosts.ssh_ports(insts)
        where = {i.id: (i.public_ip or i.private_ip or "", port) for i in insts if (port := ports.get(i.id))}
        Addresses(backend.settings.cache_dir).remember(
            {k: v for k, v in where.items() if v[0]}, forget=[i.id for i in insts if i.id not in where]
        )
        return [instance_record(i, types, prices, ssh_port=ports.get(i.id)) for i in insts]

    # Off the event loop: ~10 ms for 1,000 boxes, in the app's refresh.
    return await asyncio.to_thread(records)


async def family_types(
    backend: Backend, families: Sequence[str] = COMMON_FAMILIES, *, gpu_only: bool = False
) -> dict[str, InstanceType]:
    """The types of these families offered in the region (what `prices` and the app list)."""
    offered = await backend.ec2.type_names()
    types = await backend.ec2.instance_types(n for n in offered if n.split(".", 1)[0] in families)
    return {k: v for k, v in types.items() if v.gpu_count or not gpu_only}


@dataclass(frozen=True)
class PricedTypes:
    """The types of some families with their prices, and why prices are missing."""

    types: list[InstanceType]
    prices: Prices
    #: One line saying why prices are missing ("" when every type listed has both).
    note: str = ""


def missing_note(prices: Prices, names: Sequence[str]) -> str:
    """One line on why prices of `names` are missing: a source's failure, else the types
    with each reason ("p5.48xlarge: spot not offered in us-east-1")."""
    if prices.note:
        return prices.note
    by_reason: dict[str, list[str]] = {}
    for name in names:
        why = prices.why(name)
        if why:
            by_reason.setdefault(why, []).append(name)
    return " · ".join(f"{', '.join(types)}: {why}" for why, types in by_reason.items())


async def priced_types(
    backend: Backend, families: Sequence[str] = (), *, gpu_only: bool = False
) -> PricedTypes:
    """Types of `families` (default: the common ones, then only those sold in the region)
    with their prices, ordered by family and size."""
    types = await family_types(backend, tuple(families or COMMON_FAMILIES), gpu_only=gpu_only)
    if not types:
        return PricedTypes([], Prices())
    price = await backend.pricing.prices(sorted(types), strict=False)
    ordered = sorted(types.values(), key=lambda t: (t.family, t.vcpus, t.memory_gib))
    if not families:
        # Without a family filter, types not sold here are not worth a line; types whose
        # price could not be fetched are, with the reason under the table.
        ordered = [t for t in ordered if t.name not in price.unsold]
    return PricedTypes(ordered, price, missing_note(price, [t.name for t in ordered]))


@dataclass(frozen=True)
class PriceList:
    """The rows of `prices` (the `--json` records), where the prices came from, and why
    some are missing."""

    families: tuple[str, ...]
    rows: list[dict[str, Any]]
    #: e.g. "AWS Pricing API, fetched 2 h ago"; empty when no price is known.
    source: str = ""
    #: One line saying why prices are missing (access denied, throttled, unreachable, not
    #: sold, spot not offered); empty when none is.
    note: str = ""


async def prices(backend: Backend, families: Sequence[str] = (), *, gpu_only: bool = False) -> PriceList:
    """Instance types of `families` (default: the common ones) with vCPUs, memory, GPUs,
    on-demand and current spot $/h, ordered by family and size."""
    picked = tuple(families or COMMON_FAMILIES)
    found = await priced_types(backend, families, gpu_only=gpu_only)
    price = found.prices
    rows: list[dict[str, Any]] = []
    for t in found.types:
        p = price.get(t.name)
        rows.append(
            {
                "type": t.name,
                "vcpus": t.vcpus,
                "memory_gib": t.memory_gib,
                "gpus": t.gpus,
                "gpu_memory_gib": t.gpu_memory_gib,
                "architectures": list(t.architectures),
                "on_demand": p.on_demand if p else None,
                "spot": p.spot if p else None,
                "spot_az": p.spot_az if p else None,
                "spot_saving": round(p.spot_saving, 3) if p and p.spot_saving is not None else None,
                # Why on_demand or spot is null; "" when both are known.
                "note": price.why(t.name),
            }
        )
    sample = next(iter(price.values()), None)
    return PriceList(picked, rows, sample.source if sample is not None else "", found.note)


async def price(backend: Backend, instance_type: str) -> Price:
    """One type's prices; an unknown type, or one with no price at all, is an error saying why."""
    found = await backend.pricing.prices([instance_type], strict=False)
    if instance_type not in found:
        await backend.ec2.instance_type(instance_type)  # an unknown type says so, with a guess
        why = found.why(instance_type)
        raise CloudshError(
            f"no price known for {instance_type}" + (f": {why}" if why else ""),
            "see the types on offer with `cloudsh prices` (`cloud.prices()` in Python)",
        )
    return found[instance_type]


@dataclass(frozen=True)
class SSHConfig:
    """An OpenSSH config with one `Host NAME` block per box, and who was left out."""

    text: str
    #: (box, why) for boxes whose host key could not be checked.
    skipped: tuple[tuple[str, str], ...] = ()


#: Boxes `ssh-config` writes a block for: those that run or may run again.
CONFIGURED_STATES = ("pending", "running", "stopping", "stopped")
#: The program a `ProxyCommand` runs (`cloudsh.proxy`; a file beside this package's own).
PROXY_MAIN = Path(__file__).resolve().parent.parent / "proxy_main.py"


async def ssh_config(backend: Backend, *, wake: bool = False) -> SSHConfig:
    """The `ssh-config` text: per box, a `Host` block whose `ProxyCommand` (`cloudsh.proxy`)
    finds where it answers at each connection, and with `wake` starts it if stopped.
    Running boxes are opened to this machine and their host keys pinned now. Boxes cloudsh
    did not launch are left out (`ops.owners`): their keys are not ours."""
    from cloudsh.services.openssh import proxy_config_block

    insts = [i for i in own(await backend.ec2.list_instances()) if i.state in CONFIGURED_STATES]
    blocks = [f"# cloudsh ssh-config for {backend.label}; regenerate after launching boxes"]
    skipped: list[tuple[str, str]] = []
    for inst in insts:
        try:
            if inst.state == "running":
                await allow_this_machine(backend, inst)  # the config is for SSH from here
                host = backend.hosts.resolve(inst)
                if host is not None:
                    await backend.ssh.ensure_pinned(remember(backend, host))
        except CloudshError as exc:
            skipped.append((inst.label, str(exc)))
            continue
        command = proxy_command(backend, inst.id, wake=wake)
        blocks.append(proxy_config_block(inst.name or inst.id, inst.id, command, backend.settings))
    return SSHConfig("\n\n".join(blocks) + "\n", tuple(skipped))


def proxy_command(backend: Backend, instance_id: str, *, wake: bool = False) -> list[str]:
    """argv of the `ProxyCommand` that reaches the box on this backend's cloud: this
    Python, isolated (`-I`: the directory ssh runs in is not searched for modules) and
    without `site` (`-S`: half the start-up of `ssh NAME`), on `cloudsh/proxy_main.py`."""
    target = backend.target
    cloud = ["--sandbox"] if target.sandbox else ["--aws", *(["--profile", target.profile] if target.profile else [])]
    return [
        sys.executable, "-I", "-S", str(PROXY_MAIN), *cloud, "--region", target.region,
        *(["--wake"] if wake else []), instance_id,
    ]

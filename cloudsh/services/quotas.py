"""EC2 vCPU quotas from Service Quotas: how many vCPUs of a family class may run at once.

EC2 counts running instances against one quota per family class and market: on-demand
and spot are separate quotas (a spot box does not use the on-demand quota). A quota that
cannot be read (no `servicequotas:GetServiceQuota` permission) is reported as unknown,
never guessed.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass

from cloudsh.services.aws import BotoCoreError, ClientError, ClientFactory

#: family class -> (on-demand quota code, spot quota code, label)
QUOTA_CODES: dict[str, tuple[str, str, str]] = {
    "standard": ("L-1216C47A", "L-34B43A08", "Standard (A, C, D, H, I, M, R, T, Z)"),
    "g": ("L-DB2E81BA", "L-3819A6DF", "G and VT"),
    "p": ("L-417A185B", "L-7212CCBC", "P"),
    "x": ("L-7295265B", "L-E3A00192", "X"),
    "f": ("L-74FC7D96", "L-88CF9481", "F"),
    "inf": ("L-1945791B", "L-B5D1601B", "Inf"),
}


def family_class(instance_type: str) -> str:
    """`g5.xlarge` -> "g", `vt1.3xlarge` -> "g", `inf2.xlarge` -> "inf", `t3.micro` -> "standard"."""
    match = re.match(r"[a-z]*", instance_type.split(".", 1)[0].lower())
    letters = match.group(0) if match else ""
    if letters.startswith("g") or letters == "vt":
        return "g"
    if letters.startswith("inf"):
        return "inf"
    if letters.startswith("p"):
        return "p"
    if letters.startswith(("x", "u")):
        return "x"
    if letters == "f":
        return "f"
    return "standard"


@dataclass(frozen=True)
class VcpuQuota:
    family_class: str
    spot: bool
    code: str
    label: str
    limit: float | None  # None: could not be read

    @property
    def name(self) -> str:
        """`on-demand G and VT vCPU quota (L-DB2E81BA)`."""
        return f"{'spot' if self.spot else 'on-demand'} {self.label} vCPU quota ({self.code})"

    @property
    def aws_name(self) -> str:
        """The quota's name in Service Quotas: `Running On-Demand G and VT instances`."""
        if self.spot:
            return f"All {self.label} Spot Instance Requests"
        return f"Running On-Demand {self.label} instances"


class QuotaService:
    def __init__(self, clients: ClientFactory) -> None:
        self.clients = clients

    def _get_sync(self, code: str) -> float | None:
        client = self.clients.client("service-quotas")
        for op in ("get_service_quota", "get_aws_default_service_quota"):
            try:
                raw = getattr(client, op)(ServiceCode="ec2", QuotaCode=code)
                return float(raw["Quota"]["Value"])
            except ClientError as exc:
                # No applied value yet: AWS answers NoSuchResource; the default applies.
                if exc.response.get("Error", {}).get("Code") != "NoSuchResourceException":
                    return None
            except (BotoCoreError, KeyError, TypeError, ValueError):
                return None
        return None

    async def vcpu_quota(self, instance_type: str, *, spot: bool) -> VcpuQuota:
        cls = family_class(instance_type)
        on_demand, spot_code, label = QUOTA_CODES[cls]
        code = spot_code if spot else on_demand
        limit = await asyncio.to_thread(self._get_sync, code)
        return VcpuQuota(cls, spot, code, label, limit)

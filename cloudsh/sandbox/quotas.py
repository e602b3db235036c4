"""The sandbox's Service Quotas: EC2 vCPU quotas per family class, served as AWS serves them.

moto has no EC2 quotas, so the sandbox's WSGI layer (`storage.StorageLayer`) answers
`GetServiceQuota` / `GetAWSDefaultServiceQuota` for service code `ec2` from this table.
Standard quotas are roomy (hundreds of small boxes fit, as in an established account);
GPU quotas are small on purpose (as on a new AWS account, where they start at 0 and must
be asked for), so the "over quota" refusal of `resize` and `launch` can be tried here.
`CLOUDSH_SANDBOX_QUOTAS` (JSON, quota code -> vCPUs) overrides entries when the daemon starts;
`cloudsh sandbox quota CODE VALUE` changes one while it runs, and `vcpu_quota.py` enforces them.
Quotas are per region on AWS, each region of a new account starting from the same
defaults: every region the sandbox serves has this table, and each counts its own boxes.
"""

from __future__ import annotations

import json
import os
from typing import Any

ACCOUNT = "123456789012"

#: quota code -> (name, vCPUs). The codes and names are AWS's.
EC2_QUOTAS: dict[str, tuple[str, float]] = {
    "L-1216C47A": ("Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances", 1152.0),
    "L-DB2E81BA": ("Running On-Demand G and VT instances", 8.0),
    "L-417A185B": ("Running On-Demand P instances", 0.0),
    "L-7295265B": ("Running On-Demand X instances", 0.0),
    "L-74FC7D96": ("Running On-Demand F instances", 0.0),
    "L-1945791B": ("Running On-Demand Inf instances", 0.0),
    "L-34B43A08": ("All Standard (A, C, D, H, I, M, R, T, Z) Spot Instance Requests", 1152.0),
    "L-3819A6DF": ("All G and VT Spot Instance Requests", 8.0),
    "L-7212CCBC": ("All P Spot Instance Requests", 0.0),
    "L-E3A00192": ("All X Spot Instance Requests", 0.0),
    "L-88CF9481": ("All F Spot Instance Requests", 0.0),
    "L-B5D1601B": ("All Inf Spot Instance Requests", 0.0),
}

TARGET_PREFIX = "ServiceQuotasV20190624."


def table() -> dict[str, tuple[str, float]]:
    quotas = dict(EC2_QUOTAS)
    raw = os.environ.get("CLOUDSH_SANDBOX_QUOTAS", "")
    if raw:
        try:
            for code, value in json.loads(raw).items():
                name = quotas.get(code, (code, 0.0))[0]
                quotas[code] = (name, float(value))
        except (ValueError, TypeError, AttributeError):
            pass  # a malformed override leaves the defaults
    return quotas


def answer(
    target: str, body: bytes, quotas: dict[str, tuple[str, float]], region: str
) -> tuple[str, dict[str, Any]]:
    """(HTTP status, JSON document) for one Service Quotas request in `region`."""
    op = target.removeprefix(TARGET_PREFIX)
    try:
        req = json.loads(body or b"{}")
    except ValueError:
        req = {}
    if op not in ("GetServiceQuota", "GetAWSDefaultServiceQuota"):
        return "400 Bad Request", _error("UnsupportedOperation", f"the sandbox does not serve {op}")
    service, code = req.get("ServiceCode", ""), req.get("QuotaCode", "")
    if service != "ec2" or code not in quotas:
        return "400 Bad Request", _error(
            "NoSuchResourceException", f"The request failed because the specified quota {code} does not exist."
        )
    name, value = quotas[code]
    return "200 OK", {
        "Quota": {
            "ServiceCode": "ec2",
            "ServiceName": "Amazon Elastic Compute Cloud (Amazon EC2)",
            "QuotaArn": f"arn:aws:servicequotas:{region}:{ACCOUNT}:ec2/{code}",
            "QuotaCode": code,
            "QuotaName": name,
            "Value": value,
            "Unit": "None",
            "Adjustable": True,
            "GlobalQuota": False,
        }
    }


def _error(code: str, message: str) -> dict[str, Any]:
    return {"__type": code, "message": message, "Message": message}

"""The AWS-side backstop of a box's idle stop: a CloudWatch alarm that stops it.

If the agent on the box dies, EC2 still stops the box: an alarm on the box's
`CPUUtilization` below 2 % for a window longer than its idle stop, whose action is EC2's
built-in stop action `arn:aws:automate:REGION:ec2:stop` ("Create alarms to stop,
terminate, reboot, or recover an instance", CloudWatch user guide). A stopped box sends no
data points; missing data does not breach, so the alarm never acts on a stopped box.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from typing import Any

from cloudsh.services.aws import BotoCoreError, ClientError, ClientFactory
from cloudsh.services.ec2_calls import translate, translate_botocore

#: EC2's basic monitoring sends CPUUtilization every 5 minutes.
PERIOD_S = 300
#: CloudWatch evaluates at most one day of periods ("PutMetricAlarm", CloudWatch API reference:
#: "the total evaluation period ... cannot be longer than one day").
MAX_WINDOW_S = 86400
THRESHOLD_PERCENT = 2.0


def alarm_name(instance_id: str) -> str:
    return f"cloudsh-idle-{instance_id}"


def window_for(after_s: float) -> int:
    """Longer than the idle stop: twice it, and at least 30 minutes more, within a day."""
    window = min(MAX_WINDOW_S, max(2 * after_s, after_s + 1800))
    return PERIOD_S * max(1, math.ceil(window / PERIOD_S))


@dataclass(frozen=True)
class StopAlarm:
    name: str
    window_s: int
    actions: tuple[str, ...]
    threshold: float


class Alarms:
    def __init__(self, clients: ClientFactory, region: str) -> None:
        self.clients, self.region = clients, region

    def _call(self, op: str, **kwargs: Any) -> Any:
        try:
            return getattr(self.clients.client("cloudwatch", self.region), op)(**kwargs)
        except ClientError as exc:
            raise translate(exc, self.clients.target.profile, self.region) from None
        except BotoCoreError as exc:
            raise translate_botocore(exc, self.clients.target) from None

    async def put_stop_alarm(self, instance_id: str, after_s: float) -> StopAlarm:
        window = window_for(after_s)
        action = f"arn:aws:automate:{self.region}:ec2:stop"
        await asyncio.to_thread(
            self._call, "put_metric_alarm",
            AlarmName=alarm_name(instance_id),
            AlarmDescription=f"cloudsh: stop {instance_id} when idle, if its idle stop on the box does not",
            Namespace="AWS/EC2", MetricName="CPUUtilization",
            Dimensions=[{"Name": "InstanceId", "Value": instance_id}],
            Statistic="Maximum", Period=PERIOD_S, EvaluationPeriods=window // PERIOD_S,
            Threshold=THRESHOLD_PERCENT, ComparisonOperator="LessThanThreshold",
            TreatMissingData="notBreaching", ActionsEnabled=True, AlarmActions=[action],
        )
        return StopAlarm(alarm_name(instance_id), window, (action,), THRESHOLD_PERCENT)

    async def stop_alarm(self, instance_id: str) -> StopAlarm | None:
        doc = await asyncio.to_thread(self._call, "describe_alarms", AlarmNames=[alarm_name(instance_id)])
        for a in doc.get("MetricAlarms", []):
            return StopAlarm(str(a["AlarmName"]), int(a["Period"]) * int(a["EvaluationPeriods"]),
                             tuple(a.get("AlarmActions", [])), float(a["Threshold"]))
        return None

    async def delete_stop_alarms(self, instance_ids: list[str]) -> None:
        if instance_ids:
            await asyncio.to_thread(self._call, "delete_alarms", AlarmNames=[alarm_name(i) for i in instance_ids])

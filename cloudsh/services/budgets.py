"""An AWS Budgets monthly cost budget that emails its owner, so they hear of the bill even
without cloudsh ("Managing your costs with AWS Budgets", AWS Cost Management user guide;
CreateBudget, UpdateBudget, DescribeNotificationsForBudget, DeleteNotification,
CreateNotification and DeleteBudget in the AWS Budgets API reference).

A budget belongs to the account (its id from STS GetCallerIdentity); AWS Budgets has one
endpoint, in us-east-1. The sandbox does not serve it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from cloudsh.services.aws import BotoCoreError, ClientError, ClientFactory
from cloudsh.services.ec2_calls import translate, translate_botocore

BUDGET_NAME = "cloudsh-monthly"
BUDGETS_REGION = "us-east-1"
#: An email when the month's actual cost passes 80 % and 100 % of the budget, and when
#: AWS forecasts it past 100 %.
ALERTS = (("ACTUAL", 80.0), ("ACTUAL", 100.0), ("FORECASTED", 100.0))


def notifications() -> list[dict[str, Any]]:
    return [{"NotificationType": kind, "ComparisonOperator": "GREATER_THAN", "Threshold": share,
             "ThresholdType": "PERCENTAGE"} for kind, share in ALERTS]


class BudgetAlerts:
    def __init__(self, clients: ClientFactory) -> None:
        self.clients = clients

    def _call(self, service: str, op: str, *, unless: str = "", **kwargs: Any) -> Any:
        """`unless`: an error code that is an answer, not a failure: the call returns None."""
        try:
            return getattr(self.clients.client(service, BUDGETS_REGION), op)(**kwargs)
        except ClientError as exc:
            if unless and exc.response.get("Error", {}).get("Code") == unless:
                return None
            raise translate(exc, self.clients.target.profile, BUDGETS_REGION) from None
        except BotoCoreError as exc:
            raise translate_botocore(exc, self.clients.target) from None

    def _account(self) -> str:
        return str(self._call("sts", "get_caller_identity")["Account"])

    def _put(self, usd: float, email: str) -> bool:
        account = self._account()
        budget = {"BudgetName": BUDGET_NAME, "BudgetLimit": {"Amount": f"{usd:.2f}", "Unit": "USD"},
                  "TimeUnit": "MONTHLY", "BudgetType": "COST"}
        subscribers = [{"SubscriptionType": "EMAIL", "Address": email}]
        if self._call("budgets", "create_budget", unless="DuplicateRecordException", AccountId=account,
                      Budget=budget, NotificationsWithSubscribers=[{"Notification": n, "Subscribers": subscribers}
                                                                   for n in notifications()]) is not None:
            return True
        # It exists (set before): the new amount, and its notifications made afresh for this email.
        self._call("budgets", "update_budget", AccountId=account, NewBudget=budget)
        named = {"AccountId": account, "BudgetName": BUDGET_NAME}
        for old in self._call("budgets", "describe_notifications_for_budget", **named).get("Notifications", []):
            self._call("budgets", "delete_notification", **named, Notification=old)
        for n in notifications():
            self._call("budgets", "create_notification", **named, Notification=n, Subscribers=subscribers)
        return False

    async def put(self, usd: float, email: str) -> bool:
        """Create or update the budget and its email alerts; True when it was created."""
        return await asyncio.to_thread(self._put, usd, email)

    def _delete(self) -> None:
        # Already gone (deleted in the console): nothing to do.
        self._call("budgets", "delete_budget", unless="NotFoundException", AccountId=self._account(),
                   BudgetName=BUDGET_NAME)

    async def delete(self) -> None:
        await asyncio.to_thread(self._delete)

"""Who may decide an approval, how many must agree, and what happens when nobody does in time."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

Fallback = Literal["reject", "approve", "escalate"]


@dataclass(frozen=True)
class ApprovalPolicy:
    """`group` decides; with `four_eyes` whoever started the run may not approve its own action;
    `quorum` distinct approvals are needed (one rejection is enough to reject); after
    `expires_after` seconds the `fallback` applies: reject, approve, or escalate to `escalate_to`
    (which then has `expires_after` again before the request is rejected)."""

    group: str = "reviewers"
    four_eyes: bool = True
    quorum: int = 1
    expires_after: float | None = None
    fallback: Fallback = "reject"
    escalate_to: str | None = None
    name: str = "default"

    def __post_init__(self) -> None:
        if self.quorum < 1:
            raise ValueError("quorum must be at least 1")
        if self.fallback not in ("reject", "approve", "escalate"):
            raise ValueError(f"unknown fallback {self.fallback!r}: use reject, approve or escalate")
        if self.fallback == "escalate" and not self.escalate_to:
            raise ValueError("fallback 'escalate' needs escalate_to (a group name)")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> ApprovalPolicy:
        return cls(**(data or {}))


DEFAULT = ApprovalPolicy()

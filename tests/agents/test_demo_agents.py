"""The shipped demo agents and the command line: `durable agents`, `durable start NAME --message`,
`durable demo NAME`, `durable demo-data`. (`durable demo crash-resume` kills real workers: tests/chaos.)"""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from durable import control, demo_agents
from durable.models import Run, Status

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _scripted_demo_models() -> None:
    if not all(a.model.startswith("scripted:") for a in (demo_agents.analyst, demo_agents.support, demo_agents.triage)):
        pytest.skip("the demo agents use a real model here (an API key is set)")


def command(*args: str) -> str:
    out = StringIO()
    call_command("durable", *args, stdout=out)
    return out.getvalue()


def test_it_analyses_every_chunk_then_aggregates():
    run = demo_agents.drive_tree(control.start("demo.analyst", {"chunks": 3, "step_ms": 1}).pk)

    assert run.status == Status.SUCCEEDED
    tools = list(run.steps.filter(kind="tool").order_by("seq").values_list("name", "input"))
    assert [name for name, _ in tools] == ["analyse_chunk"] * 3 + ["aggregate"]
    assert [i["args"][0]["arguments"] for _, i in tools[:3]] == [{"index": 0}, {"index": 1}, {"index": 2}]
    assert run.output["output"].startswith("Analysed 3 chunks: total score ")


def test_it_proposes_a_refund_that_waits_for_a_reviewer():
    from django.contrib.auth.models import Group, User

    from approvals import decisions
    from approvals.models import Approval
    from runs.roles import ensure_roles
    from tests.conftest import drain

    out = command("demo", "support")

    run = Run.objects.get(workflow="demo.support")
    assert run.status == Status.WAITING_APPROVAL
    approval = Approval.objects.get(run=run)
    assert approval.tool == "propose_refund" and approval.arguments["order_id"] == "A-1001"
    assert f"waits for approval {approval.pk} (propose_refund)" in out
    assert not run.steps.filter(name="propose_refund").exists(), "nothing runs before the decision"

    ensure_roles()
    reviewer = User.objects.create_user("rev")
    reviewer.groups.add(Group.objects.get(name="reviewers"))
    decisions.decide(approval_id=approval.pk, user=reviewer, approved=True)
    run = drain(run.pk)
    assert run.status == Status.SUCCEEDED
    refund = run.steps.get(name="propose_refund")
    assert refund.input["args"][0]["approved_by"] == "rev"
    assert refund.output["status"] == "approved and issued"
    assert "I have proposed a refund of 249.00 for order A-1001" in run.output["output"]


def test_it_hands_a_billing_question_to_the_specialist():
    out = command("demo", "triage")

    triage = Run.objects.get(workflow="demo.triage")
    billing = Run.objects.get(workflow="demo.billing")
    assert (triage.status, billing.status, billing.parent_id) == (Status.SUCCEEDED, Status.SUCCEEDED, triage.pk)
    assert triage.steps.get(seq=1).kind == "handoff"
    assert "Billing looked into it: Invoice INV-2041 was paid twice" in triage.output["output"]
    assert f"run {billing.pk} demo.billing" in out


def test_it_starts_one_run_of_each_demo_agent_with_the_demo_data():
    command("demo-data")
    command("demo-data")  # again: the same runs

    started = Run.objects.filter(idempotency_key__startswith="demo-agent-")
    assert sorted(started.values_list("workflow", flat=True)) == ["demo.analyst", "demo.support", "demo.triage"]
    refunds = Run.objects.filter(idempotency_key__startswith="demo-refund-")
    assert list(refunds.values_list("workflow", flat=True)) == ["demo.refund"] * 3, "something for the inbox"


def test_it_lists_the_agents():
    out = command("agents")

    assert f"demo.support  v{demo_agents.support.version}  scripted:support  tools: lookup_order, propose_refund" in out


def test_it_starts_an_agent_by_name_with_a_message():
    run_id = int(command("start", "demo.support", "--message", "Where is A-1002?").strip())

    assert Run.objects.get(pk=run_id).input == {"message": "Where is A-1002?"}


def test_it_refuses_an_unknown_agent_on_the_command_line():
    with pytest.raises(CommandError, match="unknown workflow 'demo.nope'"):
        command("start", "demo.nope", "--message", "hi")
    assert not Run.objects.exists()

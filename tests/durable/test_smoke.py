import pytest

from durable import control
from durable.models import Status
from tests.conftest import drain

pytestmark = pytest.mark.django_db(transaction=True)


def test_it_runs_the_demo_analysis_to_completion():
    run = control.start("demo.analysis", {"chunks": 3, "step_ms": 1})
    run = drain(run.pk)
    assert run.status == Status.SUCCEEDED
    assert run.output["chunks"] == 3
    assert list(run.steps.values_list("name", flat=True)) == ["analyse_chunk"] * 3 + ["aggregate"]

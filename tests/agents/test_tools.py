"""Tool schemas from type hints and docstrings, and the validator of the arguments a model proposes."""

from __future__ import annotations

import enum
from typing import Any, Literal, NotRequired, TypedDict

import pytest

from durable.tools import ToolContext, parse_docstring, schema_for, tool, validate


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Line(TypedDict):
    sku: str
    quantity: int
    note: NotRequired[str]


@tool
def place_order(customer: str, lines: list[Line], express: bool = False, coupon: str | None = None,
                context: ToolContext | None = None) -> dict[str, Any]:
    """Place an order for a customer.

    Orders over 1,000 need a manager.

    Args:
        customer: the customer's id
        lines: what to order; one line
            per product
        express: ship by courier
    """
    return {}


def test_it_describes_a_tool_from_its_hints_and_docstring():
    assert place_order.name == "place_order"
    assert place_order.description == "Place an order for a customer.\n\nOrders over 1,000 need a manager."
    assert place_order.context_param == "context"
    assert place_order.parameters == {
        "type": "object",
        "properties": {
            "customer": {"type": "string", "description": "the customer's id"},
            "lines": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"sku": {"type": "string"}, "quantity": {"type": "integer"},
                                   "note": {"type": "string"}},
                    "additionalProperties": False,
                    "required": ["sku", "quantity"],
                },
                "description": "what to order; one line per product",
            },
            "express": {"type": "boolean", "description": "ship by courier", "default": False},
            "coupon": {"type": ["string", "null"], "default": None},
        },
        "additionalProperties": False,
        "required": ["customer", "lines"],
    }


@pytest.mark.parametrize("hint, schema", [
    (int, {"type": "integer"}),
    (float, {"type": "number"}),
    (Any, {}),
    (dict[str, int], {"type": "object", "additionalProperties": {"type": "integer"}}),
    (tuple[str, ...], {"type": "array", "items": {"type": "string"}}),
    (Literal["low", "high"], {"type": "string", "enum": ["low", "high"]}),
    (Color, {"type": "string", "enum": ["red", "blue"]}),
    (Literal[1, 2] | None, {"type": ["integer", "null"], "enum": [1, 2, None]}),
    (int | str, {"anyOf": [{"type": "integer"}, {"type": "string"}]}),
])
def test_it_maps_type_hints_to_json_schema(hint, schema):
    assert schema_for(hint) == schema


def test_it_refuses_types_json_cannot_describe():
    with pytest.raises(TypeError, match="cannot be described"):
        schema_for(complex)
    with pytest.raises(TypeError, match="keys are strings"):
        schema_for(dict[int, str])


def test_it_reads_sphinx_style_parameter_docs():
    summary, params = parse_docstring("""Do it.

    :param str city: the city
    :param days: how many days,
        at most 7
    :returns: a forecast
    """)
    assert summary == "Do it."
    assert params == {"city": "the city", "days": "how many days, at most 7"}


def test_it_marks_durable_flags_in_the_tool_spec():
    @tool(at_most_once=True, requires_approval=True)
    def send_payment(amount: float) -> str:
        """Send money."""
        return "sent"

    def over_100(arguments: dict[str, Any]) -> bool:
        return arguments["amount"] > 100

    @tool(requires_approval=over_100, transactional=True)
    def refund(amount: float) -> str:
        """Refund."""
        return "ok"

    assert send_payment.spec()["at_most_once"] is True
    assert send_payment.spec()["requires_approval"] is True
    assert refund.spec()["requires_approval"].endswith("over_100")
    assert refund.needs_approval({"amount": 500}) and not refund.needs_approval({"amount": 5})
    with pytest.raises(ValueError, match="not both"):
        tool(transactional=True, at_most_once=True)(lambda: None)
    with pytest.raises(ValueError, match="tool name"):
        tool(name="has spaces")(lambda: None)


def test_it_accepts_valid_arguments():
    assert validate({"customer": "c1", "lines": [{"sku": "x", "quantity": 2}], "coupon": None},
                    place_order.parameters) == []


@pytest.mark.parametrize("arguments, error", [
    ({"lines": []}, "$: missing required argument 'customer'"),
    ({"customer": 7, "lines": []}, "$.customer: expected string, got integer (7)"),
    ({"customer": "c", "lines": "x"}, "$.lines: expected array, got string ('x')"),
    ({"customer": "c", "lines": [{"sku": "x"}]}, "$.lines[0]: missing required property 'quantity'"),
    ({"customer": "c", "lines": [{"sku": "x", "quantity": True}]},
     "$.lines[0].quantity: expected integer, got boolean (True)"),
    ({"customer": "c", "lines": [], "fast": True},
     "$: unexpected argument 'fast' (expected: customer, lines, express, coupon)"),
    ({"customer": "c", "lines": [], "coupon": 5}, "$.coupon: expected string or null, got integer (5)"),
])
def test_it_reports_where_arguments_fail_the_schema(arguments, error):
    assert error in validate(arguments, place_order.parameters)


def test_it_checks_enums_and_numbers():
    schema = schema_for(Literal["low", "high"])
    assert validate("medium", schema) == ["$: 'medium' is not one of 'low', 'high'"]
    assert validate(1.5, {"type": "number"}) == []
    assert validate(1.5, {"type": "integer"}) == ["$: expected integer, got number (1.5)"]
    assert validate(True, {"type": "number"}) == ["$: expected number, got boolean (True)"]


def test_it_checks_the_bounds_a_hand_written_schema_sets():
    from durable.tools import validate

    schema = {"type": "object", "properties": {
        "amount": {"type": "number", "minimum": 1, "maximum": 500},
        "note": {"type": "string", "maxLength": 3},
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 1},
    }}
    assert validate({"amount": 20, "note": "ok", "tags": ["a"]}, schema) == []
    assert validate({"amount": 0}, schema) == ["$.amount: 0 is less than the minimum 1"]
    assert validate({"amount": 900}, schema) == ["$.amount: 900 is more than the maximum 500"]
    assert validate({"note": "long"}, schema) == ["$.note: longer than 3 characters"]
    assert validate({"tags": ["a", "b"]}, schema) == ["$.tags: more than 1 items"]

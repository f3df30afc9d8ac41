from durable.schema import SchemaError, validate

__all__ = ["SchemaError", "validate"]

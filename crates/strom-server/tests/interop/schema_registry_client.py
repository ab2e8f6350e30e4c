#!/usr/bin/env python3
"""Confluent's own Python client against Strom's Schema Registry API.

    python3 schema_registry_client.py http://127.0.0.1:PORT/schema-registry

Registers a JSON Schema, fetches it by id, tests compatibility, sets the subject's level,
and serializes and deserializes records with JSONSerializer / JSONDeserializer (which put
the schema id in Confluent's wire format: magic byte 0, then the id as 4 big-endian bytes).
Prints "interop ok" and exits 0 when every check holds; any failure raises.
"""
import json
import sys

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.schema_registry.json_schema import JSONDeserializer, JSONSerializer
from confluent_kafka.serialization import MessageField, SerializationContext, SerializationError

url = sys.argv[1]
client = SchemaRegistryClient({"url": url})
subject = "orders-value"

order = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "title": "Order",
    "type": "object",
    "properties": {"id": {"type": "string"}, "total": {"type": "number", "minimum": 0}},
    "required": ["id"],
}
schema_id = client.register_schema(subject, Schema(json.dumps(order), "JSON"))
assert isinstance(schema_id, int) and schema_id > 0, schema_id

fetched = client.get_schema(schema_id)
assert fetched.schema_type == "JSON", fetched.schema_type
assert json.loads(fetched.schema_str) == order, fetched.schema_str

latest = client.get_latest_version(subject)
assert (latest.schema_id, latest.version) == (schema_id, 1), latest
assert client.get_subjects() == [subject], client.get_subjects()

# BACKWARD (the default): a new required property breaks it, dropping a requirement does not.
narrower = dict(order, required=["id", "total"])
assert client.test_compatibility(subject, Schema(json.dumps(narrower), "JSON")) is False
wider = dict(order, required=[])
assert client.test_compatibility(subject, Schema(json.dumps(wider), "JSON")) is True
try:
    client.register_schema(subject, Schema(json.dumps(narrower), "JSON"))
    raise AssertionError("an incompatible schema was registered")
except SchemaRegistryError as error:
    assert error.http_status_code == 409, (error.http_status_code, error.error_code, error.error_message)

client.set_compatibility(subject, "FULL")
assert client.get_compatibility(subject) == "FULL"
assert client.get_compatibility() == "BACKWARD"

try:
    client.get_version(subject, 99)
    raise AssertionError("version 99 exists")
except SchemaRegistryError as error:
    assert error.error_code == 40402, error.error_code

# The serializer looks the schema up (auto-registration finds the same id) and validates.
serializer = JSONSerializer(json.dumps(order), client)
context = SerializationContext("orders", MessageField.VALUE)
payload = serializer({"id": "o-1", "total": 5.5}, context)
assert payload[0] == 0 and int.from_bytes(payload[1:5], "big") == schema_id, payload[:5]
try:
    serializer({"id": 7}, context)
    raise AssertionError("an invalid record was serialized")
except SerializationError:
    pass

deserializer = JSONDeserializer(None, schema_registry_client=client)
assert deserializer(payload, context) == {"id": "o-1", "total": 5.5}

print("interop ok")

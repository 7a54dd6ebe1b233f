"""The example SPA's operations are valid against the schema the API publishes."""

from __future__ import annotations

from pathlib import Path

from graphql import OperationDefinitionNode, build_schema, parse, validate

ROOT = Path(__file__).resolve().parents[1]
OPERATIONS = ROOT / "examples" / "spa" / "operations.graphql"

# What the SPA calls by name (examples/spa/app.js) and must therefore find in the file.
USED_BY_THE_SPA = {
    "Plans",
    "Me",
    "UpdateProfile",
    "StartCheckout",
    "OpenBillingPortal",
    "SyncSubscription",
    "PreviewPlanChange",
    "ChangePlan",
    "CancelSubscription",
    "ResumeSubscription",
    "DeleteAccount",
}


def test_the_spa_operations_validate_against_schema_graphql() -> None:
    schema = build_schema((ROOT / "schema.graphql").read_text())
    document = parse(OPERATIONS.read_text())
    errors = validate(schema, document)
    assert errors == [], [error.message for error in errors]


def test_every_operation_the_spa_calls_is_in_the_file() -> None:
    document = parse(OPERATIONS.read_text())
    names = {
        definition.name.value
        for definition in document.definitions
        if isinstance(definition, OperationDefinitionNode) and definition.name is not None
    }
    assert names == USED_BY_THE_SPA
    app_js = (OPERATIONS.parent / "app.js").read_text()
    for name in USED_BY_THE_SPA:
        assert f'graphql("{name}"' in app_js, name

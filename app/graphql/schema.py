"""The one bridge from Strawberry to the engine: the graphql-core schema Strawberry built.

Strawberry builds the types (with their resolvers, `Info`, DataLoaders); the engine
(`app.graphql.endpoint`, `app.graphql.execution`) validates and executes with graphql-core
directly. Strawberry's request pipeline does not run, so neither do schema extensions: a
schema that declares any is refused here, at start, rather than have them silently ignored.
What Strawberry's extensions would do lives in the engine instead (see the README's "The
GraphQL engine is ours").
"""

from __future__ import annotations

import strawberry
from graphql import GraphQLSchema


class ExtensionsDoNotRun(Exception):
    """The Strawberry schema declares extensions, which this engine does not run."""


def executable_schema(schema: strawberry.Schema) -> GraphQLSchema:
    """The graphql-core schema behind `schema`; `ExtensionsDoNotRun` if it has extensions.

    Strawberry offers no public accessor for it: `_schema` is read here and nowhere else,
    its version bounded in `pyproject.toml`, and `tests/test_engine.py` pins the engine's
    results to graphql-core's own on this schema.
    """
    if schema.extensions:
        names = ", ".join(getattr(e, "__name__", type(e).__name__) for e in schema.extensions)
        raise ExtensionsDoNotRun(
            f"Strawberry schema extensions ({names}) do not run on this service's GraphQL "
            "engine: put validation rules in schema.root.validation_rules and request "
            "logic in app/graphql instead"
        )
    built: GraphQLSchema = schema._schema
    return built

"""A graphql-core executor that completes plain records, and lists of them, in one loop.

graphql-core completes every field on its own (about 5 µs each: resolve info, resolver call,
completion), which makes a 1,000-row `usageRecords` cost ~20 ms and is a sixth of a `me`.
When every selected subfield of an object is a leaf (scalar or enum) read straight off it
(a Strawberry field with no resolver of its own: `_reads_attribute`), the result is the
same dict graphql-core would build, so this executor builds it directly. Anything else
(resolvers, nested objects, `is_type_of`, @defer/@stream, a null where the schema says
non-null) takes graphql-core's ordinary path.
"""

from __future__ import annotations

import weakref
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from graphql import (
    GraphQLEnumType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLResolveInfo,
    GraphQLScalarType,
)
from graphql.execution.collect_fields import FieldDetailsList
from graphql.execution.executor_throwing_on_incremental import ExecutorThrowingOnIncremental
from graphql.pyutils import AwaitableOrValue, Path
from graphql.type.definition import GraphQLResolveInfoHelpers
from strawberry.types.field import StrawberryField

DEFINITION = "strawberry-definition"

# response key, attribute name (None for __typename), serialize, may be null
_Leaf = tuple[str, str | None, Callable[[Any], Any], bool]


class _NotFlat(Exception):
    pass


class FlatListExecutor(ExecutorThrowingOnIncremental):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # graphql-core's helpers for resolvers are bound to the executor, which holds them: a
        # reference cycle that keeps each request's whole object graph (context, rows,
        # results) until the collector runs: ~10 MB of a worker under load. Reached through
        # a weak reference instead, the graph goes as soon as the request is answered.
        executor = weakref.ref(self)

        def gather(values: Sequence[Awaitable[Any]]) -> Awaitable[list[Any]]:
            return _alive(executor).gather_async_work(values)

        def track(values: Sequence[Awaitable[Any]]) -> None:
            _alive(executor).track_async_work(values)

        self.async_helpers = GraphQLResolveInfoHelpers(gather=gather, track=track)

    def complete_list_value(
        self,
        return_type: GraphQLList[GraphQLOutputType],
        field_details_list: FieldDetailsList,
        info: GraphQLResolveInfo[Any],
        path: Path,
        result: Any,
        position_context: None,
    ) -> AwaitableOrValue[list[Any]]:
        if isinstance(result, list):
            leaves = self._flat_plan(return_type, field_details_list, path)
            if leaves is not None:
                try:
                    return _complete_flat(
                        leaves, result, isinstance(return_type.of_type, GraphQLNonNull)
                    )
                except Exception:  # noqa: S110 - graphql-core reports it properly
                    pass
        return super().complete_list_value(
            return_type, field_details_list, info, path, result, position_context
        )

    def complete_object_value(
        self,
        return_type: GraphQLObjectType,
        field_details_list: FieldDetailsList,
        info: GraphQLResolveInfo[Any],
        path: Path,
        result: Any,
        position_context: None,
    ) -> AwaitableOrValue[dict[str, Any]]:
        leaves = self._leaf_plan(return_type, field_details_list)
        if leaves is not None:
            try:
                return _complete_leaves(leaves, result)
            except Exception:  # noqa: S110 - graphql-core reports it properly
                pass
        return super().complete_object_value(
            return_type, field_details_list, info, path, result, position_context
        )

    def _flat_plan(
        self,
        return_type: GraphQLList[GraphQLOutputType],
        field_details_list: FieldDetailsList,
        path: Path,
    ) -> list[_Leaf] | None:
        item_type = return_type.of_type
        if isinstance(item_type, GraphQLNonNull):
            item_type = item_type.of_type
        if not isinstance(item_type, GraphQLObjectType):
            return None
        if self.get_stream_usage(field_details_list, path) is not None:
            return None
        return self._leaf_plan(item_type, field_details_list)

    def _leaf_plan(
        self, item_type: GraphQLObjectType, field_details_list: FieldDetailsList
    ) -> list[_Leaf] | None:
        if item_type.is_type_of is not None:
            return None
        grouped, defer_usages, *_ = self.collect_subfields(item_type, field_details_list)
        if defer_usages:
            return None
        leaves: list[_Leaf] = []
        for response_key, details in grouped.items():
            name = details[0].node.name.value
            if name == "__typename":
                leaves.append((response_key, None, _constant(item_type.name), False))
                continue
            field = item_type.fields.get(name)
            definition = None if field is None else (field.extensions or {}).get(DEFINITION)
            if field is None or not isinstance(definition, StrawberryField):
                return None
            if not _reads_attribute(definition):
                return None
            leaf_type, nullable = field.type, True
            if isinstance(leaf_type, GraphQLNonNull):
                leaf_type, nullable = leaf_type.of_type, False
            if not isinstance(leaf_type, GraphQLScalarType | GraphQLEnumType):
                return None
            leaves.append((response_key, definition.python_name, leaf_type.serialize, nullable))
        return leaves


def _reads_attribute(definition: StrawberryField) -> bool:
    """A Strawberry field answered by reading the attribute of its name: no resolver of its
    own, no field extensions, no permissions (Strawberry's public `StrawberryField`)."""
    return (
        definition.base_resolver is None
        and not definition.extensions
        and not definition.permission_classes
    )


def _alive(executor: weakref.ref[FlatListExecutor]) -> FlatListExecutor:
    alive = executor()
    assert alive is not None, "resolver helpers used after their execution ended"
    return alive


def _constant(value: str) -> Callable[[Any], Any]:
    return lambda _: value


def _complete_flat(leaves: list[_Leaf], items: Iterable[Any], items_non_null: bool) -> list[Any]:
    completed: list[Any] = []
    for item in items:
        if item is None:
            if items_non_null:
                raise _NotFlat
            completed.append(None)
            continue
        completed.append(_complete_leaves(leaves, item))
    return completed


def _complete_leaves(leaves: list[_Leaf], item: Any) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for response_key, attribute, serialize, nullable in leaves:
        value = item if attribute is None else getattr(item, attribute)
        if value is None:
            if not nullable:
                raise _NotFlat  # let graphql-core report the error as it would
            row[response_key] = None
        else:
            row[response_key] = serialize(value)
    return row

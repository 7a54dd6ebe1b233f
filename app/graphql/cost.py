"""What an operation costs, worked out once on its validated document.

Fields are collected as execution collects them (graphql-core's CollectFields): selections
with the same response key merge, and a named fragment is expanded once per selection set,
so `{ me { id id } }` costs what `{ me { id } }` does, while 30 aliases cost 30 times.

- a field costs 1 (a Stripe-backed one `STRIPE_WEIGHT`) plus what is selected under it;
- a list multiplies what is selected under it by its size: the `first` literal, else (a
  variable, or no `first`) its declared fixed size when the schema gives one, else the
  largest page any list serves (`MAX_PAGE`);
- introspection (`__schema`, `__type`) costs 1 a field: the schema is small and finite.

Which fields call Stripe, and which lists have a fixed size, is declared on the schema's
fields (Strawberry `metadata`, or graphql-core field `extensions`): see `schema.costs`.
(Each Stripe-backed field that runs also counts against the caller's Stripe rate limit, in
the service it calls.)

No existing analyser fitted: strawberry has depth, alias and token limits but no cost;
graphql-core has none; `graphql-complexity` (PyPI) needs the variables (so its result cannot
be cached with the document), does not see non-null lists (`[T!]!`, all of ours) as lists,
sums every operation of a document and has no notion of a fixed list size.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLField,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLSchema,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    get_named_type,
    is_composite_type,
)
from graphql.type.definition import GraphQLInterfaceType
from graphql.type.introspection import SchemaMetaFieldDef, TypeMetaFieldDef

from schema.costs import SIZE_KEY, STRIPE_KEY
from services.listings import MAX_PAGE

MAX_COST = 5000
# A Stripe round trip (100-500 ms, and a share of Stripe's 25-100 requests a second) weighs
# as much as 500 fields read from our database: a full export (4,528) has room for one.
STRIPE_WEIGHT = 500
# Fields a document may expand to when every fragment spread is followed every time, as
# the depth and alias limits (strawberry's) walk it: they would take minutes on a 1 KB
# document whose fragments each spread the next one twice.
MAX_EXPANDED_FIELDS = 10_000

_DEFINITION = "strawberry-definition"
_INTROSPECTION = {"__schema": SchemaMetaFieldDef, "__type": TypeMetaFieldDef}


def operation_cost(
    schema: GraphQLSchema,
    operation: OperationDefinitionNode,
    fragments: Mapping[str, FragmentDefinitionNode],
) -> int:
    """The cost of a validated operation (see the module's docstring)."""
    root = schema.get_root_type(operation.operation)
    assert root is not None, "validated: the schema has this operation's root type"
    return _Walk(schema, fragments).selections(root, [operation.selection_set], False)


def root_fields(
    operation: OperationDefinitionNode, fragments: Mapping[str, FragmentDefinitionNode]
) -> tuple[frozenset[str], bool]:
    """The names of the root fields an operation reaches (through inline fragments and
    fragment spreads too), and whether a directive sits on any selection on the way."""
    on_fragments: list[bool] = []
    fields = _collect(fragments, None, [operation.selection_set], on_fragments)
    names = frozenset(node.name.value for node, _ in fields)
    return names, bool(on_fragments) or any(node.directives for node, _ in fields)


def expanded_fields(document: DocumentNode) -> int:
    """How many fields the document's operations hold when every fragment spread is
    followed every time (no merging): the work of a walker that does not merge."""
    fragments = fragments_of(document)
    known: dict[str, int] = {}

    def count(selection_set: SelectionSetNode, visiting: frozenset[str]) -> int:
        total = 0
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                total += 1
                if selection.selection_set is not None:
                    total += count(selection.selection_set, visiting)
            elif isinstance(selection, InlineFragmentNode):
                total += count(selection.selection_set, visiting)
            elif isinstance(selection, FragmentSpreadNode):
                name = selection.name.value
                fragment = fragments.get(name)
                if fragment is None or name in visiting:
                    continue  # validation refuses both; this stays total regardless
                if name not in known:
                    known[name] = count(fragment.selection_set, visiting | {name})
                total += known[name]
            if total > MAX_EXPANDED_FIELDS:
                return total
        return total

    total = 0
    for definition in document.definitions:
        if isinstance(definition, OperationDefinitionNode):
            total += count(definition.selection_set, frozenset())
    return total


def fragments_of(document: DocumentNode) -> dict[str, FragmentDefinitionNode]:
    return {
        definition.name.value: definition
        for definition in document.definitions
        if isinstance(definition, FragmentDefinitionNode)
    }


_Typed = tuple[FieldNode, GraphQLObjectType | GraphQLInterfaceType | None]


def _collect(
    fragments: Mapping[str, FragmentDefinitionNode],
    parent: GraphQLObjectType | GraphQLInterfaceType | None,
    selection_sets: Sequence[SelectionSetNode],
    directives: list[bool],
    schema: GraphQLSchema | None = None,
) -> list[_Typed]:
    """The field nodes of merged selection sets, each with the type it is selected on;
    a named fragment once (which also ends any cycle). `directives` gets a `True` for each
    fragment that carries a directive."""
    fields: list[_Typed] = []
    seen: set[str] = set()
    stack: list[tuple[Any, GraphQLObjectType | GraphQLInterfaceType | None]] = [
        (selection, parent)
        for selection_set in reversed(selection_sets)
        for selection in reversed(selection_set.selections)
    ]  # popped in the document's order
    while stack:
        selection, on = stack.pop()
        if isinstance(selection, FieldNode):
            fields.append((selection, on))
            continue
        if selection.directives:
            directives.append(True)
        if isinstance(selection, InlineFragmentNode):
            inner = _condition(schema, selection.type_condition, on)
            stack.extend((s, inner) for s in reversed(selection.selection_set.selections))
        elif isinstance(selection, FragmentSpreadNode):
            name = selection.name.value
            fragment = fragments.get(name)
            if fragment is None or name in seen:
                continue
            seen.add(name)
            inner = _condition(schema, fragment.type_condition, on)
            stack.extend((s, inner) for s in reversed(fragment.selection_set.selections))
    return fields


def _condition(
    schema: GraphQLSchema | None,
    condition: Any,
    on: GraphQLObjectType | GraphQLInterfaceType | None,
) -> GraphQLObjectType | GraphQLInterfaceType | None:
    if schema is None or condition is None:
        return on
    found = schema.get_type(condition.name.value)
    return found if isinstance(found, GraphQLObjectType | GraphQLInterfaceType) else on


class _Walk:
    def __init__(
        self, schema: GraphQLSchema, fragments: Mapping[str, FragmentDefinitionNode]
    ) -> None:
        self.schema = schema
        self.fragments = fragments

    def selections(
        self,
        parent: GraphQLObjectType | GraphQLInterfaceType | None,
        selection_sets: list[SelectionSetNode],
        introspection: bool,
    ) -> int:
        groups: dict[tuple[str, str], list[_Typed]] = {}
        for node, on in _collect(self.fragments, parent, selection_sets, [], self.schema):
            key = node.alias.value if node.alias else node.name.value
            groups.setdefault((key, on.name if on else ""), []).append((node, on))
        return sum(self.field(nodes, introspection) for nodes in groups.values())

    def field(self, nodes: list[_Typed], introspection: bool) -> int:
        node, on = nodes[0]
        name = node.name.value
        if name == "__typename":
            return 1
        definition: GraphQLField | None
        if name in _INTROSPECTION:
            definition, introspection = _INTROSPECTION[name], True
        else:
            definition = on.fields.get(name) if on is not None else None
        if definition is None:  # validated: cannot happen; a field still costs
            return 1
        marks = _marks(definition)
        weight = STRIPE_WEIGHT if marks.get(STRIPE_KEY) else 1
        size = 1
        if not introspection and _is_list(definition.type):
            size = max(1, _list_size(definition, node, marks))
        named = get_named_type(definition.type)
        selection_sets = [n.selection_set for n, _ in nodes if n.selection_set is not None]
        if not selection_sets or not is_composite_type(named):
            return weight * size
        # A union's fields come only through fragments, which name their own types.
        parent = named if isinstance(named, GraphQLObjectType | GraphQLInterfaceType) else None
        return weight + size * self.selections(parent, selection_sets, introspection)


def _marks(field: GraphQLField) -> Mapping[str, Any]:
    definition = (field.extensions or {}).get(_DEFINITION)
    metadata = getattr(definition, "metadata", None)
    if metadata:
        return metadata  # type: ignore[no-any-return]
    return field.extensions or {}


def _is_list(type_: GraphQLOutputType) -> bool:
    if isinstance(type_, GraphQLNonNull):
        type_ = type_.of_type
    return isinstance(type_, GraphQLList)


def _list_size(field: GraphQLField, node: FieldNode, marks: Mapping[str, Any]) -> int:
    fixed = marks.get(SIZE_KEY)
    if "first" in field.args:
        for argument in node.arguments or ():
            if argument.name.value == "first" and isinstance(argument.value, IntValueNode):
                return int(argument.value.value)  # validated: a 32-bit Int
        return min(MAX_PAGE, fixed) if isinstance(fixed, int) else MAX_PAGE
    return fixed if isinstance(fixed, int) else MAX_PAGE

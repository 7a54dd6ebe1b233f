"""Parsed, validated and analysed documents, each prepared once and kept by digest.

A document is parsed and validated once (the limits included), then each of its operations
is analysed once: its root fields (found through inline fragments and fragment spreads too)
give the label for logs and metrics, whether its answer is the same for everyone (`public`)
and whether it is an export (`heavy`); its cost and the Stripe calls it can make come from
`app.graphql.cost`. The result is kept in an LRU bounded in bytes, keyed by a digest of the text.

Estimating what an entry holds: a parsed document keeps its source text (through the
locations of its nodes) and every token of it, comments included, in a linked list next to
its nodes; each token holds its own copy of its text (a 16 KB comment is kept twice).
Measured with tracemalloc on CPython 3.11 (what dropping the entries gives back), a parsed
document holds 350 to 660 bytes a token beyond its text (the most for runs of short fields,
the least for long arguments) and about 3 KB at least: so an entry counts its text twice
(4 bytes a character unless it is ASCII), 700 bytes a token and 2 KB. A document's errors
are kept already formatted: twice their JSON length and 700 bytes each. Against the
measurements, this counts 1.1 to 2.7 times what an entry holds
(`tests/test_graphql_limits.py` checks it never counts less).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from graphql import (
    DocumentNode,
    GraphQLError,
    GraphQLSchema,
    OperationDefinitionNode,
    OperationType,
    parse,
    specified_rules,
    validate,
)
from graphql.validation import ASTValidationRule

from app.graphql.caches import ByteBoundedLRU, digest
from app.graphql.cost import (
    MAX_COST,
    MAX_EXPANDED_FIELDS,
    expanded_fields,
    fragments_of,
    operation_cost,
    root_fields,
)
from app.graphql.errors import document_entry, domain_entry
from services.errors import QueryTooComplex

# Root fields whose answers are large: built a few at a time (`Runtime.export_slots`).
HEAVY_ROOT_FIELDS = frozenset({"export"})

# Root fields whose answer is the same for everyone for the life of the process (the plan
# catalog is built at start-up), so their encoded responses can be reused.
PUBLIC_ROOT_FIELDS = frozenset({"plans", "__typename"})

DOCUMENTS_MAX_BYTES = 8 * 1024 * 1024
BYTES_PER_TOKEN = 700
BYTES_PER_DOCUMENT = 2048
BYTES_PER_ERROR = 700


@dataclass(frozen=True, slots=True)
class Operation:
    """One operation of a prepared document, analysed once."""

    node: OperationDefinitionNode
    label: str  # for metrics and logs: its root fields, bounded by the schema
    public: bool  # every root field it reaches answers the same for everyone
    heavy: bool  # it reaches an export
    cost: int
    variables: tuple[str, ...]  # the variables it declares

    @property
    def kind(self) -> OperationType:
        return self.node.operation

    def too_complex(self) -> dict[str, Any] | None:
        """The error entry when its cost is over the limit; nothing of it may run."""
        if self.cost <= MAX_COST:
            return None
        return domain_entry(
            QueryTooComplex(
                f"The query costs {self.cost:,}, over the limit of {MAX_COST:,}: ask for "
                "fewer items (first), fewer fields or fewer aliases.",
                cost=self.cost,
                maxCost=MAX_COST,
            )
        )


@dataclass(frozen=True, slots=True)
class Prepared:
    key: bytes  # the digest of the query text
    document: DocumentNode | None
    errors: tuple[dict[str, Any], ...]  # formatted, with their codes: the document's own
    label: str  # every operation's root fields, for a request that names none of them
    operations: Mapping[str | None, Operation] = field(default_factory=dict)

    def operation(self, name: str | None) -> Operation | None:
        """The operation to run: the named one, or the only one when none is named."""
        return self.operations.get(name)


class Documents:
    """Prepared documents by digest of their text, bounded in bytes (least recently used go)."""

    def __init__(
        self,
        schema: GraphQLSchema,
        rules: Sequence[type[ASTValidationRule]],
        *,
        max_tokens: int,
        hide_suggestions: bool,
        max_bytes: int = DOCUMENTS_MAX_BYTES,
    ) -> None:
        self._schema = schema
        self._rules = (*specified_rules, *rules)
        self._max_tokens = max_tokens
        self._hide_suggestions = hide_suggestions
        self.cache: ByteBoundedLRU[bytes, Prepared] = ByteBoundedLRU(max_bytes)

    def get(self, query: str) -> Prepared:
        """A client's document: prepared once, then kept (bounded in bytes) by its digest."""
        key = digest(query)
        found = self.cache.get(key)
        if found is None:
            found, size = self._prepare(key, query)
            self.cache.put(key, found, size)
        return found

    def prepare(self, query: str) -> Prepared:
        """One of the service's own documents (the download's): prepared, not cached."""
        return self._prepare(digest(query), query)[0]

    def _prepare(self, key: bytes, query: str) -> tuple[Prepared, int]:
        try:
            document = parse(query, max_tokens=self._max_tokens)
        except GraphQLError as error:
            return self._invalid(key, [document_entry(error)])
        try:
            # Before the limits (strawberry's), which would follow every spread every time.
            if expanded_fields(document) > MAX_EXPANDED_FIELDS:
                return self._invalid(key, [_too_many_fields()])
            errors = validate(
                self._schema, document, self._rules, hide_suggestions=self._hide_suggestions
            )
            if errors:
                return self._invalid(key, [document_entry(error) for error in errors])
            operations = self._operations(document)
        except RecursionError:  # the parser bounds nesting; this is the last guard
            return self._invalid(key, [_nested_too_deeply()])
        labels = sorted({operation.label for operation in operations.values()})
        prepared = Prepared(key, document, (), "+".join(labels), operations)
        return prepared, _document_size(query, document)

    def _operations(self, document: DocumentNode) -> dict[str | None, Operation]:
        fragments = fragments_of(document)
        found: dict[str | None, Operation] = {}
        for definition in document.definitions:
            if not isinstance(definition, OperationDefinitionNode):
                continue
            names, directives = root_fields(definition, fragments)
            cost = operation_cost(self._schema, definition, fragments)
            operation = Operation(
                node=definition,
                label="+".join(sorted(names)),
                public=(
                    definition.operation is OperationType.QUERY
                    and names <= PUBLIC_ROOT_FIELDS
                    and not directives
                ),
                heavy=not HEAVY_ROOT_FIELDS.isdisjoint(names),
                cost=cost,
                variables=tuple(
                    variable.variable.name.value
                    for variable in definition.variable_definitions or ()
                ),
            )
            found[definition.name.value if definition.name else None] = operation
        if len(found) == 1:  # the only operation also runs when none is named
            found[None] = next(iter(found.values()))
        return found

    @staticmethod
    def _invalid(key: bytes, entries: list[dict[str, Any]]) -> tuple[Prepared, int]:
        size = 2 * len(json.dumps(entries)) + BYTES_PER_ERROR * len(entries)
        return Prepared(key, None, tuple(entries), "invalid"), size


def _document_size(query: str, document: DocumentNode) -> int:
    text = 2 * (len(query) if query.isascii() else 4 * len(query))
    tokens = 0
    token = document.loc.start_token if document.loc is not None else None
    while token is not None:
        tokens += 1
        token = token.next
    return text + BYTES_PER_TOKEN * tokens + BYTES_PER_DOCUMENT


def _too_many_fields() -> dict[str, Any]:
    return domain_entry(
        QueryTooComplex(
            f"The document's fragments expand to over {MAX_EXPANDED_FIELDS:,} fields.",
            maxExpandedFields=MAX_EXPANDED_FIELDS,
        )
    )


def _nested_too_deeply() -> dict[str, Any]:
    return document_entry(GraphQLError("The document is nested too deeply."))

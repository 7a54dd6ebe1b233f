"""The GraphQL engine: Strawberry builds the types, this package executes them with
graphql-core (see the README's "The GraphQL engine is ours")."""

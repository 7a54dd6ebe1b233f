"""GraphQL to service calls, and service results back to GraphQL types; nothing more."""

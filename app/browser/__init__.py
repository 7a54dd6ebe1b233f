"""What a browser is served: GraphiQL at `/graphql`, and the example SPA (`make spa`)."""

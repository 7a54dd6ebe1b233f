"""The HTTP edge: app factory, routes, authentication, settings and the CLI."""

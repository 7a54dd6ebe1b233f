"""SQL and connections. Every query the service runs lives in this package."""

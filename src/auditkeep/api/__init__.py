"""The HTTP API: app factory, dependencies, error mapping, and one route module per resource."""

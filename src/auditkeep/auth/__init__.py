"""Authentication and authorization: API keys, principals, permissions."""

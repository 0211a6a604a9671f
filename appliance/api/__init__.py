"""The REST API: OpenAI-compatible routes, admin routes, health and metrics, behind API keys and roles."""

"""A tiny gpt-oss of the real architecture for tests, the demo and the README run command."""

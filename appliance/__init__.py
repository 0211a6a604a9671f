"""gpt-oss air-gapped appliance."""

"""Ray Serve glue: the LLM deployment around the engine, the FastAPI gateway, and `build_app`.

Only this package (and appliance.cli.serve) imports Ray; the core packages never do.
"""

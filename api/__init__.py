"""The edge: settings, the FastAPI app, the CLI, and the wiring that starts everything."""

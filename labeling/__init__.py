"""The preference store and the labeling workflow around it (import, generate, tasks, export, app)."""

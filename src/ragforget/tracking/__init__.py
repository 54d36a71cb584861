"""MLflow: one run per job, with params, curves, metrics, artifacts and tags."""

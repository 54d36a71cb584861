"""Training objectives. Each method is a bundle of loss terms (and, later, data transforms or optimizers)."""

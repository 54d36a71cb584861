"""Evaluation: ODQA accuracy, general-capability retention (lm-eval) and distribution shift."""

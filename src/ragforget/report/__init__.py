"""Tables and plots regenerated from tracked runs."""

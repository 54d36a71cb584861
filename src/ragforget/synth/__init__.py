"""self_synth: reconstructed general data (instruction sampling, committee responses, judging)."""

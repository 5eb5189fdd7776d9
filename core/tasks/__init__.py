"""Tasks: problem sources, prompt rendering and answer checking."""

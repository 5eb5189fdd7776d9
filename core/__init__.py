"""T1 Lab core: data synthesis, SFT, RL and budgeted sampling."""

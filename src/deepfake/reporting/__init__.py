"""Layer 5: the figures and tables of each notebook's report, one module per notebook, so a change to one
report's figure is a change to that step's code only."""

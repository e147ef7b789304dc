"""bloodcls: blood-cell classifiers from few labels."""

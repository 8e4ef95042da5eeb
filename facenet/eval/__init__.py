"""Evaluation: verification metrics (`metrics`, pure NumPy), LFW pairs files and their embedding (`lfw`), the ROC
curve (`plot`) and embedding plots for training logs (`visualize`)."""

"""Label tools over a refinery's outputs: suspect ranking and flags (scores), confident learning (cleanlab
wrappers), detection metrics against known errors, K-fold out-of-sample probabilities (folds), contact sheets of
suspects (sheet) and the label export file format (export_format); pure functions over numpy arrays."""

"""Label tools over a refinery's outputs: suspect ranking and flags (scores), confident learning (cleanlab
wrappers), detection metrics against known errors, K-fold out-of-sample probabilities (folds), contact sheets of
suspects (sheet) and the label export file format (export_format): pure functions over numpy arrays. The commands
of `python -m lr_jax.labels` (cli: export, issues; kfold; compare) apply them to finished runs, whose data and
generations run_labels reloads."""

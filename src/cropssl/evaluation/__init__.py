"""Evaluation of frozen encoders on crop type mapping.

Modules: :mod:`~cropssl.evaluation.labels` (WorldCereal legends, label encoding),
:mod:`~cropssl.evaluation.splits` (random / group / temporal splits, leakage checks),
:mod:`~cropssl.evaluation.features` (hand-crafted features of the CatBoost baseline),
:mod:`~cropssl.evaluation.metrics` (F1, confusion, per-group metrics, bootstrap CIs) and
:mod:`~cropssl.evaluation.probes` (logistic / kNN / CatBoost heads with a common interface).

Importing the package is light; each module imports its heavy dependencies (scikit-learn, CatBoost)
itself.
"""

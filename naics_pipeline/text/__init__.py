"""Free text -> NAICS codes: `TextClassifier` (classify) and the text baselines; above training, whose
trained stages it loads through training.checkpoint."""

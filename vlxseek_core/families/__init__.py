"""Model families other than VLM-FO1 (which lives at the package top level): one sub-package
per family, each with its config, model, checkpoint and tiny-checkpoint code."""

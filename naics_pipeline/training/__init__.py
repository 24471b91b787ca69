"""Hyperbolic embedding model, Lightning training of one stage, and evaluation against the tree.

Import the submodules: `lorentz`, `model`, `losses` and `checkpoint` need only torch, while `loop`,
`module`, `datamodule` and `text_alignment` pull in Lightning (seconds to import).
"""

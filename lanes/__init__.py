"""Lanes: classification into critical, standard and batch (the schedulers come next).

Imports only the pure floor of `engine` (model, codecs), never the node.
"""

from lanes.classify import Classification, Classifier
from lanes.rules import ClassificationRules

__all__ = ["Classification", "ClassificationRules", "Classifier"]

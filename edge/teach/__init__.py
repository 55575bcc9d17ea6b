"""Few-shot adaptation without torch: a base bundle's features -> a new head -> a new bundle.

``from edge.teach import teach, TeachReport, TeachError``; see :func:`edge.teach.core.teach` and
``docs/teach.md``.
"""
from edge.teach.core import TeachError, TeachOptions, TeachReport, teach

__all__ = ["TeachError", "TeachOptions", "TeachReport", "teach"]

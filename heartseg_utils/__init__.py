"""heartseg_utils: the small shared package behind the heartseg notebook series.

Import the topic modules explicitly, e.g. ``from heartseg_utils import data, viz``.
Importing has no side effects: no seeding, no downloads, no plotting-style changes.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]

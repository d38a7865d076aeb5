"""The package version, in a core module of its own so that any layer can read it.

Import it from here, not from the root package: ``import modelshield`` pulls in every layer (the root
re-exports the public API), which the import-linter layer contract counts as an upward import.
"""

__version__ = "0.1.0"

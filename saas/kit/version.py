"""The API's version, in one place: the OpenAPI document's `info.version` and the package's
version (pyproject.toml reads it from here). Semantic versioning of what customers see: README,
Versions and changes, says what is breaking; CHANGELOG.md's latest release must carry this number
(tests/test_version.py)."""

VERSION = "1.0.0"

"""Known gaps, as data: (backend, test-name glob) -> reason. Applied as strict xfail."""

KNOWN_GAPS: dict[tuple[str, str], str] = {}

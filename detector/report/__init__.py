"""Self-contained HTML reports (plots embedded as PNG data URIs: they open offline)."""

"""Log line matching (being moved here from agent/matcher.py, issue 14)."""

"""dutytail: log lines and local checks in, Flashduty Standard Alert events out, durably."""

__version__ = "0.1.0"

"""Tasks: each builds its examples (hub or local files) and a Lightning DataModule."""

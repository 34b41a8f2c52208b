"""DALI pipeline graphs (see clips.py)."""

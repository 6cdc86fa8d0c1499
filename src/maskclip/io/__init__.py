"""File plumbing shared by every command: atomic writes, safe reading of pickled archives."""

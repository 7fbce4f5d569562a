"""Files in and out: atomic writers, output locks, safe checkpoint reading."""

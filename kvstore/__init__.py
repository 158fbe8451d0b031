"""kvstore: a key-value store server over consistent-hashed SQL shards."""

__version__ = "0.1.0"

"""Several local models: what they cost in memory, which are resident, and verified swaps.

- memory.py  the resident-size estimate from a GGUF's own metadata, and what the box has
- verify.py  a file's SHA-256 and its detached Ed25519 signature
- fleet.py   named models, each its own engine; LRU residency; atomic swap and rollback
"""

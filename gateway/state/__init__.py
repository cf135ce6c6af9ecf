"""State that replicas of one gateway share: a Redis that does not evict (`state.redis_url`)."""

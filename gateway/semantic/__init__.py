"""The semantic cache: the same question asked another way answered from the cache.

question: what is compared by meaning (the last user message) and the partition it is
searched in; gguf_encoder: all-MiniLM-L6-v2 as a GGUF llama.cpp runs; index: the stored
questions' vectors per partition, in process or on Redis; verifier: whether a stored question
may answer a new one; semcache: the look-up and the store behind the exact cache."""

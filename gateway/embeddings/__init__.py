"""POST /v1/embeddings: the request, the local embedding model, cloud embedding models, the
per-input cache, and the service that routes one request through them by the YAML policy."""

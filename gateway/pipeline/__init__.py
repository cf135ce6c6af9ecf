"""One pipeline for every model endpoint: the opening, the attempt loop and the stream writer.

Chat, completions, Responses and embeddings are adapters over these: `body` parses and bounds
a request, `opening` admits it (tenant, budget, cache control, deadline), `attempt` tries the
decided targets in order, `stream` writes an answer as server-sent events.
"""

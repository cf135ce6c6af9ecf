"""The OpenAI Responses API (/v1/responses), served by mapping it onto the chat pipeline."""

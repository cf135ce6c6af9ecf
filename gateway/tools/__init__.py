"""Offline tools: commands run beside the gateway; the gateway never imports them."""

"""KimiChat's own API under /v1/ (docs/api.md "KimiChat's own API"): OpenAI- and Anthropic-compatible endpoints
for scripts, authenticated by personal API keys (services/apikeys), paid through the chat's ledger."""

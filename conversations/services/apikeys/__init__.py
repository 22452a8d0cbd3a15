"""Personal API keys for KimiChat's own API (/v1/): making, checking and revoking them (keys), and paying for the
answers made with them through the same ledger as the chat (metering)."""

"""Provider adapters: OpenAI format in, each provider's wire format out, and back. No I/O."""

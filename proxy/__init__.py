"""llmrelay: an OpenAI-compatible LLM gateway configured by LiteLLM's config.yaml."""

__version__ = "0.1.0"

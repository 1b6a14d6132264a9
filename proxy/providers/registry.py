"""Model string -> provider adapter.

``openai/gpt-4o`` names its provider by prefix; a bare ``gpt-4o`` or ``claude-3-haiku`` is
recognised by name as LiteLLM does. This is the only place that maps names to adapters: no
``if provider == ...`` chains elsewhere.
"""

from __future__ import annotations

from proxy.deployment import UnsupportedProvider
from proxy.google_auth import GoogleTokens
from proxy.providers.anthropic import AnthropicAdapter
from proxy.providers.aws_auth import AssumedRoles
from proxy.providers.azure import AzureAdapter, AzureAIAdapter
from proxy.providers.base import Adapter
from proxy.providers.bedrock import BedrockAdapter
from proxy.providers.cohere import CohereAdapter
from proxy.providers.custom import CustomAdapter
from proxy.providers.gemini import GeminiAdapter
from proxy.providers.huggingface import HuggingFaceAdapter
from proxy.providers.ollama import OllamaAdapter, OllamaChatAdapter
from proxy.providers.openai import OpenAIAdapter, OpenAICompatibleAdapter, TextCompletionOpenAIAdapter
from proxy.providers.sagemaker import SageMakerAdapter
from proxy.providers.vertex import VertexAdapter

#: Providers whose API is OpenAI's wire format at a known base URL, with their key variable.
OPENAI_COMPATIBLE: dict[str, tuple[str | None, str | None]] = {
    "custom_openai": (None, None),
    "hosted_vllm": (None, None),
    "vllm": (None, None),
    "lm_studio": (None, "LM_STUDIO_API_KEY"),
    "xinference": ("http://127.0.0.1:9997/v1", "XINFERENCE_API_KEY"),
    "deepseek": ("https://api.deepseek.com/v1", "DEEPSEEK_API_KEY"),
    "groq": ("https://api.groq.com/openai/v1", "GROQ_API_KEY"),
    "mistral": ("https://api.mistral.ai/v1", "MISTRAL_API_KEY"),
    "together_ai": ("https://api.together.xyz/v1", "TOGETHERAI_API_KEY"),
    "openrouter": ("https://openrouter.ai/api/v1", "OPENROUTER_API_KEY"),
    "fireworks_ai": ("https://api.fireworks.ai/inference/v1", "FIREWORKS_AI_API_KEY"),
    "perplexity": ("https://api.perplexity.ai", "PERPLEXITYAI_API_KEY"),
    "deepinfra": ("https://api.deepinfra.com/v1/openai", "DEEPINFRA_API_KEY"),
    "xai": ("https://api.x.ai/v1", "XAI_API_KEY"),
}

#: Providers LiteLLM knows that have no adapter here yet: a clear boot error, not a traceback.
NOT_YET = frozenset(
    {
        "replicate", "watsonx",
        "cloudflare", "databricks", "predibase", "ai21", "nlp_cloud", "aleph_alpha", "petals",
        "palm", "clarifai", "triton", "voyage",
    }
)

#: Name prefixes of models that LiteLLM routes to a provider without a prefix.
BARE_NAMES: tuple[tuple[str, str], ...] = (
    ("gpt-", "openai"),
    ("chatgpt-", "openai"),
    ("ft:gpt-", "openai"),
    ("o1", "openai"),
    ("o3", "openai"),
    ("o4", "openai"),
    ("text-embedding-", "openai"),
    ("text-moderation-", "openai"),
    ("omni-moderation", "openai"),
    ("text-davinci-", "text-completion-openai"),
    ("davinci-", "text-completion-openai"),
    ("babbage-", "text-completion-openai"),
    ("claude", "anthropic"),
    ("command", "cohere"),
    ("gemini", "gemini"),
)


class ProviderRegistry:
    """Holds one adapter instance per provider name."""

    def __init__(self, google_tokens: GoogleTokens | None = None) -> None:
        #: Vertex AI access tokens, fetched once per credential and refreshed in the background
        self.google_tokens = google_tokens or GoogleTokens()
        # temporary AWS credentials (STS roles), shared by the adapters that sign for AWS
        self.aws_roles = AssumedRoles()
        self.adapters: dict[str, Adapter] = {
            "openai": OpenAIAdapter(),
            "text-completion-openai": TextCompletionOpenAIAdapter(),
            "azure": AzureAdapter(),
            "azure_ai": AzureAIAdapter(),
            "anthropic": AnthropicAdapter(),
            "bedrock": BedrockAdapter(self.aws_roles),
            "sagemaker": SageMakerAdapter(self.aws_roles),
            "cohere": CohereAdapter(),
            "gemini": GeminiAdapter(),
            "vertex_ai": VertexAdapter(self.google_tokens),
        }
        for name, (base, key_env) in OPENAI_COMPATIBLE.items():
            self.adapters[name] = OpenAICompatibleAdapter(name, base, key_env)
        for adapter in (OllamaAdapter(), OllamaChatAdapter(), HuggingFaceAdapter(), CustomAdapter()):
            self.adapters[adapter.provider] = adapter

    def close(self) -> None:
        """Stop background work (Google token and AWS credential refreshes)."""
        self.google_tokens.close()
        self.aws_roles.close()

    def register(self, adapter: Adapter) -> None:
        self.adapters[adapter.provider] = adapter

    def provider_of(self, model: str, custom_llm_provider: str | None = None) -> tuple[str, str]:
        """(provider, upstream model) for a model string, without checking support."""
        if custom_llm_provider:
            prefix = f"{custom_llm_provider}/"
            return custom_llm_provider, model[len(prefix):] if model.startswith(prefix) else model
        head, sep, rest = model.partition("/")
        if sep and (head in self.adapters or head in NOT_YET):
            return head, rest
        for prefix, provider in BARE_NAMES:
            if model.startswith(prefix):
                return provider, model
        return "", model

    def resolve(self, model: str, custom_llm_provider: str | None = None) -> tuple[Adapter, str]:
        """(adapter, upstream model); raises UnsupportedProvider with a readable reason."""
        if model == "*":
            return self.adapters["openai"], "*"
        provider, upstream = self.provider_of(model, custom_llm_provider)
        if provider in self.adapters:
            return self.adapters[provider], upstream
        if provider in NOT_YET:
            raise UnsupportedProvider(f"provider {provider!r} is not supported yet (model {model!r})")
        if provider:
            raise UnsupportedProvider(f"unknown provider {provider!r} (model {model!r})")
        raise UnsupportedProvider(
            f"cannot tell the provider of {model!r}: prefix it, e.g. 'openai/{model}' for any "
            "OpenAI-compatible server"
        )

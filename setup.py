"""llmrelay: an OpenAI-compatible LLM gateway configured by LiteLLM's config.yaml."""

from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="llmrelay",
    version="0.1.0",
    description="OpenAI-compatible LLM gateway: many providers behind one endpoint",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["proxy", "proxy.*", "middleware", "middleware.*"]),
    py_modules=["wsgi"],
    package_data={"proxy": ["data/*.json", "data/tokenizers/*"]},
    include_package_data=True,
    install_requires=[
        "flask>=3.0",
        "gunicorn>=23.0",
        "gevent>=24.2",
        "packaging>=23.0",  # imported by gunicorn's gevent worker, not declared by gunicorn
        "geventhttpclient>=2.3",
        "requests>=2.31",
        "marshmallow>=3.20",
        "pyyaml>=6.0",
        "redis>=5.0",
        "sqlite-utils>=3.36",
        "psycopg[binary]>=3.2",  # PostgreSQL store (DATABASE_URL); gevent-aware from 3.1.14
        "psycopg-pool>=3.2",
        "orjson>=3.9",
        "botocore>=1.34",  # SigV4 signing (bedrock/, sagemaker/), STS roles, event streams
        "google-auth>=2.28",  # vertex_ai/ access tokens (service accounts, application default credentials)
        "tiktoken>=0.9",
        "tokenizers>=0.19",  # model_info.custom_tokenizer (Hugging Face tokenizers)
        "prometheus-client>=0.20",  # GET /metrics, added up across workers (multiprocess mode)
        "opentelemetry-sdk>=1.25",  # the otel exporter's Resource (service.name, SDK attributes)
        "opentelemetry-proto>=1.25",  # the OTLP scope message; spans are encoded by proxy/observe/otlp.py
        "boto3>=1.34",  # key_management_system: aws_secret_manager
        "apispec>=6.0",  # /openapi.json from the marshmallow schemas
        "swagger-ui-bundle>=1.1",  # the Swagger UI's files, served by the proxy (works offline)
    ],
    extras_require={
        "test": [
            "pytest>=8.0",
            "pytest-timeout>=2.3",
            "openai>=1.40",
            "anthropic>=0.34",
            "google-genai>=1.0",  # the /vertex_ai surface is tested with Google's SDK
            "boto3>=1.34",  # drives the /bedrock surface as AWS SDK users do
            "ruff>=0.5",
            "moto[server]>=5.0",  # a local AWS Secrets Manager for the secret-manager tests
            "wheel>=0.40",  # tests build and install a wheel of the package (tests/install.py)
            "hypothesis>=6.100",  # property-based fuzzing of the request surface (tests/e2e/test_fuzz.py)
        ],
        "fuzz": [
            "schemathesis>=4.0",  # on demand: python -m tests.fuzz.schemathesis_run against /openapi.json
        ],
    },
    entry_points={"console_scripts": ["llmrelay=proxy.__main__:main"]},
)

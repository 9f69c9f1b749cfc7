"""``tunesmith serve``: the model versions behind an OpenAI-compatible API.

Layout: ``protocol`` (the OpenAI request/response/error schemas), ``errors`` (every error in
OpenAI's shape), ``auth`` (API keys), ``catalog`` (model names -> versions and aliases),
``scheduler`` (the bounded queue and the one worker thread that owns the engine and batches
requests), ``streaming`` (token stream -> text deltas), ``service`` (the chat endpoint's logic),
``requestlog`` (the PII-scrubbed request log in the workspace database), ``rollout`` (canary
routing and automatic rollback), ``app`` (the FastAPI app: routes, key check, handlers) and
``launch`` (load the models, run uvicorn). See docs/serving.md.
"""

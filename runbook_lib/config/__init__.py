"""Configuration: ``settings`` (environment variables, read with pydantic-settings; secrets as ``SecretStr``),
``params`` (every step's parameter model, used by the notebooks and by the runner before a run starts) and
``paths`` (the project root, against which relative settings resolve)."""

"""Environment provisioning: one virtual environment per requirement set, keyed, built atomically, reused.

:mod:`~autoglm_runtime.isolation.envs.key` computes what identifies an environment;
:mod:`~autoglm_runtime.isolation.envs.build` builds (or reuses) it with uv or venv + pip.
"""

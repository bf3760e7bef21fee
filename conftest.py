"""Settings shared by every test under tests/ and integration/."""

from hypothesis import HealthCheck, settings

# These machines are shared and often loaded: how fast hypothesis generates examples is not what any test checks
# (no test asserts on time), so its speed health check and per-example deadline are off everywhere.
settings.register_profile("autoglm", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("autoglm")

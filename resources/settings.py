"""The deployment's shared settings as a resource: label delay, history start, price of a CPU
hour, sensor intervals (`fraudloop.core.settings.Settings`, secrets excepted)."""

from fraudloop.core.settings import Settings
from resources.policy import policy_resource

SettingsResource = policy_resource(
    Settings, "SettingsResource", "What the whole deployment shares (Settings, no secrets)."
)

"""`ConfigError`: bad input a user can fix, as one line naming the field or path.

This module imports nothing of the project, so every module may import it.
"""


class ConfigError(ValueError):
  """A config value (or a path it names) that cannot work; message is one line."""
